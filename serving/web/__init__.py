"""Server-rendered pages for officers, analysts, data scientists and auditors
(English and Russian), mounted at /web on the API's app: `mount_web(app)`."""

from serving.web.pages import mount_web

__all__ = ["mount_web"]
