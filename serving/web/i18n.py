"""Interface texts in English and Russian (one catalogue) and the language choice.

The language is chosen per user with a cookie (`caravan_lang`); without it, the
browser's Accept-Language decides. Reason texts come from the feature registry
(`features.registry.render_reason`), which has both languages itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LANGS = ("en", "ru")
DEFAULT_LANG = "en"
LANG_COOKIE = "caravan_lang"

# key -> (English, Russian)
CATALOGUE: dict[str, tuple[str, str]] = {
    "app.title": ("Caravan risk targeting", "Caravan: целевой отбор по рискам"),
    "app.tagline": (
        "The engine proposes; a named official decides every inspection.",
        "Система предлагает; решение о каждом досмотре принимает должностное лицо.",
    ),
    "nav.queue": ("Queue", "Очередь"),
    "nav.rules": ("Rules", "Правила"),
    "nav.models": ("Models", "Модели"),
    "nav.audit": ("Audit", "Аудит"),
    "nav.logout": ("Sign out", "Выйти"),
    "nav.language": ("Language", "Язык"),
    "nav.skip": ("Skip to content", "Перейти к содержимому"),
    "nav.signed_in_as": ("Signed in as", "Пользователь"),
    "role.officer": ("targeting officer", "инспектор по целевому отбору"),
    "role.analyst": ("risk analyst", "аналитик рисков"),
    "role.data_scientist": ("data scientist", "специалист по данным"),
    "role.auditor": ("auditor", "аудитор"),
    "role.admin": ("administrator", "администратор"),
    # login
    "login.title": ("Sign in", "Вход"),
    "login.username": ("User name", "Имя пользователя"),
    "login.password": ("Password", "Пароль"),
    "login.submit": ("Sign in", "Войти"),
    "login.failed": ("Wrong user name or password.", "Неверное имя пользователя или пароль."),
    "login.locked": (
        "Too many failed sign-ins: try again in {seconds} s.",
        "Слишком много неудачных попыток входа: повторите через {seconds} с.",
    ),
    "login.expired": (
        "Your session has ended: please sign in again.",
        "Сеанс завершён: войдите снова.",
    ),
    "login.required": ("Please sign in.", "Пожалуйста, войдите в систему."),
    # a page opened after this browser's session ended (run out, or ended elsewhere)
    "login.session_ended": (
        "Your session ended at {at}; sign in again to go on.",
        "Ваш сеанс завершился в {at}; войдите снова, чтобы продолжить.",
    ),
    "login.signed_out": ("You have signed out.", "Вы вышли из системы."),
    "login.missing": ("Enter your user name and password.", "Введите имя пользователя и пароль."),
    # a form sent after the session ended (or refused by the CSRF check): nothing is
    # saved; serving/web/static/caravan-forms.js fills in again what was typed
    "login.form_expired": (
        "Your session ended before the form was sent, so nothing was saved. "
        "Sign in again to go back to the page.",
        "Сеанс завершился до отправки формы, поэтому ничего не сохранено. "
        "Войдите снова, чтобы вернуться на страницу.",
    ),
    "error.csrf_back": (
        "Back to the page of the form",
        "Вернуться на страницу формы",
    ),
    "form.kept": (
        "What you typed in the form is kept in this browser tab: it will be filled in "
        "again on the page, for you to check and send.",
        "Введённое вами в форму сохранено в этой вкладке браузера: оно будет снова "
        "подставлено в форму на странице, чтобы вы проверили и отправили его.",
    ),
    "form.restored": (
        "This form has been filled in again with what you typed earlier: it has NOT been "
        "saved yet. Check it and send it again.",
        "Форма снова заполнена тем, что вы ввели ранее: это ЕЩЁ НЕ сохранено. "
        "Проверьте и отправьте форму ещё раз.",
    ),
    # errors
    "error.title": ("Not allowed", "Доступ запрещён"),
    "error.forbidden_role": (
        "Your role ({role}) may not open this page.",
        "Ваша роль ({role}) не даёт доступа к этой странице.",
    ),
    "error.not_found": ("Not found", "Не найдено"),
    "error.csrf": (
        "The form has expired or did not come from this site: reload the page and try again.",
        "Форма устарела или отправлена не с этого сайта: обновите страницу и повторите.",
    ),
    "error.back": ("Back to the start page", "На начальную страницу"),
    "error.field": ("Check this field", "Проверьте это поле"),
    # home
    "home.title": ("Start", "Начало"),
    "home.pages": ("Your pages", "Ваши страницы"),
    "home.queue": (
        "Today's inspections of an office, with why each was picked.",
        "Досмотры поста на день и причины отбора каждого.",
    ),
    "home.rules": (
        "Targeting rules: hit counts, finding rates, edits and versions.",
        "Правила отбора: срабатывания, доля находок, правка и версии.",
    ),
    "home.models": (
        "Champion and challenger models, their metrics and promotion.",
        "Модели (чемпион и претендент), их метрики и продвижение.",
    ),
    "home.audit": (
        "The audit trail: who did what, chain check, score replay.",
        "Журнал аудита: кто и что сделал, проверка цепочки, повтор расчёта.",
    ),
    # queue
    "queue.title": ("Inspection queue", "Очередь досмотров"),
    "queue.office": ("Office", "Таможенный пост"),
    "queue.day": ("Day", "Дата"),
    "queue.lane": ("Lane", "Коридор"),
    "queue.status": ("Status", "Статус"),
    "queue.sort": ("Sort by", "Сортировка"),
    "queue.sort.rank": ("rank", "место в очереди"),
    "queue.sort.priority": ("priority", "приоритет"),
    "queue.sort.age": ("waiting time", "время ожидания"),
    "queue.exploration_only": ("Exploration entries only", "Только случайный отбор"),
    "queue.apply": ("Show", "Показать"),
    "queue.all": ("all", "все"),
    "queue.capacity_fill": (
        "fills the day's capacity: among the highest priorities left, although its risk "
        "alone is in the green lane",
        "заполняет дневную норму: среди наивысших оставшихся приоритетов, хотя по одному "
        "риску отправка в зелёном коридоре",
    ),
    "queue.office_unknown": (
        "No office {office} is known: no shipment or setting names it.",
        "Таможенный пост {office} неизвестен: его не называет ни одна отправка или настройка.",
    ),
    "queue.declared_on": (
        "declared on {day}: an earlier day's shipment that must be inspected",
        "задекларировано {day}: отправка прошлого дня, подлежащая обязательному досмотру",
    ),
    "queue.day_format": ("Enter the day as YYYY-MM-DD.", "Укажите день в виде ГГГГ-ММ-ДД."),
    "queue.day_range": (
        "No queue on {day}: a queue day lies between {first} and {last}. Today's queue is shown.",
        "Очереди на {day} нет: день очереди лежит между {first} и {last}. Показана очередь "
        "на сегодня.",
    ),
    "queue.capacity": (
        "Capacity used: {used} of {capacity} ({decided} decided, {claimed} claimed, {open} open)",
        "Использовано мест: {used} из {capacity} (решено {decided}, в работе {claimed}, "
        "открыто {open})",
    ),
    "queue.exploration_share": (
        "Exploration share: {share} of the capacity is chosen at random.",
        "Доля исследования: {share} мест заполняется случайным отбором.",
    ),
    "queue.empty": (
        "No entries for this office and day (or none match the filter).",
        "Нет записей для этого поста и даты (или ни одна не подходит под фильтр).",
    ),
    "queue.rank": ("#", "№"),
    "queue.shipment": ("Shipment", "Отправка"),
    "queue.priority": ("Priority", "Приоритет"),
    "queue.reasons": ("Top reasons", "Главные причины"),
    "queue.selection": ("Selection", "Способ отбора"),
    "queue.action": ("Action", "Действие"),
    "queue.claim": ("Claim", "Взять в работу"),
    "queue.claimed_by": ("claimed by {who}", "в работе у {who}"),
    "queue.exploration": ("Exploration (random)", "Исследование (случайный)"),
    "queue.overdue": ("Overdue", "Просрочено"),
    "queue.overdue_title": ("Overdue referrals of this office", "Просроченные направления поста"),
    "queue.overdue_none": ("No overdue referrals.", "Просроченных направлений нет."),
    "queue.over_capacity": ("must-inspect, over capacity", "обязательный, сверх лимита"),
    "queue.capacity_over": (
        "+ {over} must-inspect over capacity.",
        "+ обязательных сверх лимита: {over}.",
    ),
    # a queue's day is the office's calendar day in its time zone (UTC by default)
    "queue.utc_day": ("UTC day: 00:00-24:00 UTC", "сутки по UTC: 00:00-24:00 UTC"),
    "queue.zone_day": ("day in {zone} (UTC{offset})", "сутки по времени {zone} (UTC{offset})"),
    "queue.no_reasons": ("no model reason above the threshold", "нет значимых причин модели"),
    "queue.claimed_ok": ("Referral {id} claimed.", "Направление {id} взято в работу."),
    "queue.choose_office": ("Choose an office to see its queue.", "Выберите пост."),
    "queue.age": ("Waiting", "Ожидает"),
    "queue.age_note": (
        "Waiting: the time since the shipment was declared (a shipment of an earlier day "
        "too), up to its decision. Overdue: still awaiting a decision after more than "
        "{hours} h of waiting, or a must-inspect entry of a past day's queue.",
        "Ожидает: время с момента декларирования отправки (и для отправки прошлого дня) "
        "до решения по ней. Просрочено: решения всё ещё нет, а ожидание длится дольше "
        "{hours} ч, или это обязательная к досмотру отправка из очереди прошедшего дня.",
    ),
    "queue.waiting_since": (
        "waiting {age}, declared {at}",
        "ожидает {age}, задекларировано {at}",
    ),
    "queue.exploration_chance": (
        "Drawn at random to check the model, not picked for its risk; chance of being "
        "drawn: {chance}.",
        "Выбрано случайно для проверки модели, а не по риску; вероятность попасть в "
        "случайную выборку: {chance}.",
    ),
    "queue.priority_note": (
        "Priority: the model's risk combined with rule and watchlist hits (0 to 1; 2 and "
        "more for must-inspect entries). Very small values are written as powers of ten "
        "(3.2 × 10⁻⁹), so that entries can still be told apart.",
        "Приоритет: риск по модели вместе со срабатываниями правил и списков наблюдения "
        "(от 0 до 1; 2 и больше для обязательных к досмотру). Очень малые значения "
        "записаны степенью десяти (3,2 × 10⁻⁹), чтобы записи можно было различить.",
    ),
    # selection methods
    "method.model": ("model", "модель"),
    "method.rule": ("rule", "правило"),
    "method.random": ("random", "случайный"),
    "method.intelligence": ("intelligence", "оперативные данные"),
    "method.watchlist": ("watchlist", "список наблюдения"),
    "trav.surname": ("Surname", "Фамилия"),
    "trav.given_names": ("Given names", "Имена"),
    "trav.name_native": ("Name (native script)", "Имя (на родном языке)"),
    "trav.date_of_birth": ("Date of birth", "Дата рождения"),
    "trav.nationality": ("Nationality", "Гражданство"),
    "trav.document_number": ("Document number", "Номер документа"),
    "trav.route": ("Journey", "Маршрут поездки"),
    "trav.departure_at": ("Departure", "Отправление"),
    "models.same_as_champion": (
        "The challenger is the champion's version: train a new model to compare.",
        "Претендент совпадает с чемпионом: обучите новую модель для сравнения.",
    ),
    "models.history": ("Promotions", "История продвижений"),
    "models.when": ("When", "Когда"),
    "models.from_to": ("Version", "Версия"),
    "models.by": ("By", "Кто"),
    "models.forced": ("forced", "принудительно"),
    # lanes and statuses
    "lane.red": ("red: physical inspection", "красный: физический досмотр"),
    "lane.yellow": ("yellow: documentary check", "жёлтый: документальный контроль"),
    "lane.green": ("green: release", "зелёный: выпуск"),
    "status.open": ("open", "открыто"),
    "status.claimed": ("claimed", "в работе"),
    "status.inspected": ("inspected", "досмотрено"),
    "status.waived": ("waived", "досмотр отменён"),
    "status.closed": ("closed", "закрыто"),
    # shipment
    "ship.title": ("Shipment {id}", "Отправка {id}"),
    "ship.header": ("Declaration", "Декларация"),
    "ship.declaration_ref": ("Declaration reference", "Номер декларации"),
    "ship.declared_at": ("Declared at", "Дата декларирования"),
    "ship.expected_arrival": ("Expected arrival", "Ожидаемое прибытие"),
    "ship.mode": ("Mode", "Вид транспорта"),
    "ship.carrier": ("Carrier", "Перевозчик"),
    "ship.conveyance": ("Conveyance", "Транспортное средство"),
    "ship.mass": ("Gross mass, kg", "Масса брутто, кг"),
    "ship.packages": ("Packages", "Грузовых мест"),
    "ship.invoice": ("Invoice", "Счёт-фактура"),
    "ship.containers": ("Containers / seals", "Контейнеры / пломбы"),
    "ship.score": ("Risk score", "Оценка риска"),
    "ship.probability": ("Model probability", "Вероятность по модели"),
    "ship.priority": ("Priority", "Приоритет"),
    "ship.lane": ("Lane", "Коридор"),
    "ship.model_version": ("Model version", "Версия модели"),
    "ship.feature_set": ("Feature set", "Набор признаков"),
    "ship.must_inspect": ("Must be inspected", "Обязателен досмотр"),
    "ship.parties": ("Parties", "Участники сделки"),
    "ship.party": ("Role", "Роль"),
    "ship.party.consignor": ("consignor", "отправитель"),
    "ship.party.consignee": ("consignee", "получатель"),
    "ship.party.declarant": ("declarant", "декларант"),
    "ship.name": ("Name", "Наименование"),
    "ship.address": ("Address", "Адрес"),
    "ship.country": ("Country", "Страна"),
    "ship.identifier": ("Identifier", "Идентификатор"),
    "ship.contact": ("Contact", "Контакты"),
    "ship.goods": ("Goods lines", "Товарные позиции"),
    "ship.line": ("Line", "Поз."),
    "ship.hs": ("HS code", "Код ТН ВЭД"),
    "ship.description": ("Description", "Описание"),
    "ship.quantity": ("Quantity", "Количество"),
    "ship.net_mass": ("Net mass, kg", "Масса нетто, кг"),
    "ship.value": ("Value", "Стоимость"),
    "ship.origin": ("Origin", "Происхождение"),
    "ship.route": ("Route", "Маршрут"),
    "ship.route.origin": ("origin", "происхождение"),
    "ship.route.dispatch": ("dispatch", "отправление"),
    "ship.route.transit": ("transit", "транзит"),
    "ship.route.destination": ("destination", "назначение"),
    "ship.reasons": ("Why it was picked", "Почему отобрана"),
    "ship.reasons_none": (
        "No model reason above the threshold.",
        "Нет значимых причин по модели.",
    ),
    "ship.reasons_effect": ("effect on probability", "влияние на вероятность"),
    # a reason's effect as the chart shows it: a factor on the odds (the probability
    # of a rare event moves by too little to read: "+0.000")
    "ship.reasons_odds": ("odds ×{factor}", "шансы ×{factor}"),
    "ship.log_odds": ("log-odds", "лог. шансов"),
    "ship.waterfall": ("How the score was built (SHAP)", "Из чего сложилась оценка (SHAP)"),
    "ship.waterfall_note": (
        "Bars in log-odds from the model's base value to this shipment's score; "
        "red raises the risk, blue lowers it.",
        "Столбцы в логарифме шансов от базового значения модели до оценки отправки; "
        "красные повышают риск, синие снижают.",
    ),
    "ship.waterfall_base": ("Base value", "Базовое значение"),
    "ship.waterfall_final": ("This shipment", "Эта отправка"),
    "ship.waterfall_other": ("{n} other features", "Прочие признаки: {n}"),
    "ship.waterfall_missing": (
        "The model version {version} is not available: the chart cannot be drawn.",
        "Версия модели {version} недоступна: диаграмму построить нельзя.",
    ),
    "ship.rule_hits": ("Rule hits", "Сработавшие правила"),
    "ship.rule_hits_none": ("No rule hit.", "Правила не сработали."),
    "ship.severity": ("Severity", "Значимость"),
    "ship.rule": ("Rule", "Правило"),
    "ship.watchlist": ("Watchlist hits", "Совпадения со списками наблюдения"),
    "ship.watchlist_none": ("No watchlist match.", "Совпадений со списками нет."),
    "ship.watchlist_score": ("Similarity", "Сходство"),
    "ship.watchlist_exact": ("exact", "точное"),
    "ship.watchlist_near": (
        "near miss: below the alert threshold of {threshold}%, not counted in the priority",
        "близкое совпадение: ниже порога тревоги {threshold}%, в приоритете не учитывается",
    ),
    "ship.watchlist_weak.one_word": (
        "weak match: it rests on one word only, so it counts as a near miss, not in the priority",
        "слабое совпадение: совпадает только одно слово, поэтому оно считается близким "
        "совпадением и в приоритете не учитывается",
    ),
    "ship.watchlist_weak.initials": (
        "weak match: it rests on one word and initials, so it counts as a near miss, not in "
        "the priority",
        "слабое совпадение: совпадают только одно слово и инициалы, поэтому оно считается "
        "близким совпадением и в приоритете не учитывается",
    ),
    "ship.watchlist_weak.company_individual": (
        "weak match: a company's name against a listed individual's name, so it counts as "
        "a near miss, not in the priority",
        "слабое совпадение: наименование организации похоже на имя физического лица из "
        "списка, поэтому оно считается близким совпадением и в приоритете не учитывается",
    ),
    "ship.watchlist_matched": ("Listed name matched", "Совпавшее имя из списка"),
    "ship.watchlist_type.individual": ("individual", "физическое лицо"),
    "ship.watchlist_type.entity": ("entity", "организация"),
    "ship.watchlist_entry": ("Listed entry", "Запись списка"),
    "ship.watchlist_list": ("List", "Список"),
    "ship.watchlist_match": ("Match", "Совпадение"),
    "ship.watchlist_by_document": (
        "an identity document or ID number on the list",
        "номер документа или идентификационный номер из списка",
    ),
    "ship.watchlist_traveller": (
        "Linked traveller record (API/PNR)",
        "Связанная запись пассажира (API/PNR)",
    ),
    "ship.travellers": ("Linked travellers (API/PNR)", "Связанные пассажиры (API/PNR)"),
    "ship.travellers_none": ("No linked traveller record.", "Связанных записей пассажиров нет."),
    "ship.link": ("Link", "Связь"),
    "ship.confidence": ("Confidence", "Уверенность"),
    "ship.masked": ("masked", "скрыто"),
    "ship.purpose": ("Purpose of viewing", "Цель просмотра"),
    "ship.unmask": ("Show personal data", "Показать персональные данные"),
    "ship.unmask_note": (
        "Every view of personal data is logged with its purpose.",
        "Каждый просмотр персональных данных регистрируется с указанием цели.",
    ),
    "ship.unmask_forbidden": (
        "Your role may not see personal data.",
        "Ваша роль не даёт доступа к персональным данным.",
    ),
    "ship.purpose_required": ("A purpose is required.", "Укажите цель просмотра."),
    "ship.unmask_officer_key": (
        "This shipment came with an officer's API key, which names no person: it cannot be "
        "the link for an officer to unmask a traveller record. Unmask it from a shipment "
        "declared by someone else.",
        "Эта отправка поступила по API-ключу инспектора, за которым не стоит конкретное "
        "лицо: она не может служить связью для раскрытия данных путешественника "
        "инспектором. Раскройте их по отправке, заявленной другим лицом.",
    ),
    "ship.unmask_self_ingested": (
        "You ingested this shipment yourself: a shipment one ingested oneself cannot be "
        "the link for unmasking a traveller record. A colleague may unmask it, or you "
        "may for a shipment declared by someone else.",
        "Эту отправку зарегистрировали вы сами: собственная отправка не может служить "
        "связью для раскрытия данных путешественника. Раскрыть их может коллега или вы "
        "— по отправке, заявленной кем-то другим.",
    ),
    "ship.referral": ("Referral", "Направление на досмотр"),
    "ship.referral_none": (
        "This shipment is not in a queue.",
        "Эта отправка не включена в очередь.",
    ),
    "ship.referral_status": (
        "Referral {id} ({day}), status: {status}",
        "Направление {id} ({day}), статус: {status}",
    ),
    "ship.outcome": ("Record the inspection result", "Результат досмотра"),
    "ship.finding": ("Finding", "Находка"),
    "ship.finding_yes": ("something was found", "обнаружено"),
    "ship.finding_no": ("nothing was found", "ничего не обнаружено"),
    "ship.category": ("Finding category", "Категория находки"),
    "ship.category_none": ("(none)", "(нет)"),
    "ship.seized": ("Quantity seized", "Изъято, количество"),
    "ship.unit": ("Unit", "Единица"),
    "ship.notes": ("Notes", "Примечания"),
    "ship.save_outcome": ("Record result", "Записать результат"),
    "ship.waiver": ("Waive the inspection", "Отказ от досмотра"),
    "ship.waiver_reason": ("Reason for the waiver", "Причина отказа"),
    "ship.waive": ("Waive", "Отказаться от досмотра"),
    "ship.outcome_saved": ("Result recorded.", "Результат записан."),
    "ship.waived": ("Inspection waived.", "Досмотр отменён."),
    "ship.decided_by": ("Decided by {who}", "Решение принял(а) {who}"),
    "ship.decided_by_at": ("Decided by {who} at {at}", "Решение принял(а) {who}, {at}"),
    "ship.claimed_by_at": ("claimed by {who} at {at}", "в работе у {who} с {at}"),
    "ship.waiting": (
        "waiting {age} since the declaration",
        "ожидает {age} с момента декларирования",
    ),
    "ship.claim_first": (
        "Claim the referral to record a result or a waiver.",
        "Возьмите направление в работу, чтобы записать результат или отказ.",
    ),
    "err.finding_required": ("Say whether something was found.", "Укажите, есть ли находка."),
    "err.category_required": (
        "A finding needs a category.",
        "Для находки нужна категория.",
    ),
    "err.category_without_finding": (
        "A category is given only when something was found.",
        "Категорию указывают только при находке.",
    ),
    "err.quantity_number": (
        "Enter a number above zero.",
        "Введите число больше нуля.",
    ),
    "err.quantity_without_finding": (
        "A quantity seized needs a finding.",
        "Количество изъятого указывают только при находке.",
    ),
    "err.unit_required": ("A quantity needs a unit.", "Для количества нужна единица."),
    "err.quantity_required": ("A unit needs a quantity.", "Для единицы нужно количество."),
    "err.unit_without_finding": (
        "A unit is given only when something was found.",
        "Единицу указывают только при находке.",
    ),
    "err.quantity_whole": (
        "{unit} counts things: enter a whole number.",
        "{unit} — счётная единица: введите целое число.",
    ),
    "err.seizure_duplicate": (
        "The same category and unit as line {line}: give the whole quantity in one line.",
        "Та же категория и единица, что в строке {line}: укажите всё количество одной строкой.",
    ),
    "err.seizures_too_many": (
        "At most {n} seizure lines.",
        "Не более {n} строк изъятого.",
    ),
    "err.category_unknown": ("Choose a category from the list.", "Выберите категорию из списка."),
    "err.unit_unknown": ("Choose a unit from the list.", "Выберите единицу из списка."),
    "ship.seizures": ("Seized", "Изъято"),
    "ship.seizures_note": (
        "One line per kind of goods (for example the weapons, and their rounds); empty "
        "lines are left out. Pieces, articles, pairs, sets and cartons are whole numbers.",
        "По строке на каждый вид изъятого (например, оружие и патроны к нему); пустые "
        "строки не учитываются. Штуки, изделия, пары, комплекты и коробки — целые числа.",
    ),
    "ship.seizure_category_n": ("Category, line {n}", "Категория, строка {n}"),
    "ship.seizure_quantity_n": ("Quantity, line {n}", "Количество, строка {n}"),
    "ship.seizure_unit_n": ("Unit, line {n}", "Единица, строка {n}"),
    "unit.PCE": ("pieces", "шт."),
    "unit.NAR": ("number of articles", "изделий, шт."),
    "unit.PR": ("pairs", "пар"),
    "unit.SET": ("sets", "компл."),
    "unit.CT": ("cartons", "коробок"),
    "unit.KGM": ("kilograms", "кг"),
    "unit.TNE": ("tonnes", "т"),
    "unit.LTR": ("litres", "л"),
    "unit.MTR": ("metres", "м"),
    "unit.MTK": ("square metres", "м²"),
    "err.too_long": ("Too long (at most {n} characters).", "Слишком длинно (не более {n} знаков)."),
    "err.reason_required": (
        "A waiver needs a reason.",
        "Для отказа от досмотра нужна причина.",
    ),
    "err.control_chars": (
        "Control characters are not allowed.",
        "Управляющие символы не допускаются.",
    ),
    "err.bidi_chars": (
        "Characters that change the direction of text (e.g. U+202E) are not allowed: "
        "they make text show in another order than it is written.",
        "Символы, меняющие направление текста (например, U+202E), не допускаются: "
        "текст с ними отображается не в том порядке, в каком записан.",
    ),
    "err.invisible_only": (
        "The text holds only invisible characters (e.g. zero-width spaces).",
        "Текст состоит только из невидимых символов (например, пробелов нулевой ширины).",
    ),
    "err.quantity_zero": (
        "A quantity of 0 says nothing was seized: give the quantity seized, or leave the "
        "quantity and its unit empty.",
        "Количество 0 означает, что ничего не изъято: укажите изъятое количество или "
        "оставьте количество и единицу пустыми.",
    ),
    # rules
    "rules.title": ("Targeting rules", "Правила отбора"),
    "rules.new": ("New rule", "Новое правило"),
    "rules.id": ("Id", "Идентификатор"),
    "rules.name": ("Name", "Название"),
    "rules.version": ("Version", "Версия"),
    "rules.severity": ("Severity", "Значимость"),
    "rules.active": ("Active", "Действует"),
    "rules.hits": ("Hits", "Срабатываний"),
    "rules.inspected": ("Inspected", "Досмотрено"),
    "rules.findings": ("Findings", "Находок"),
    "rules.finding_rate": ("Finding rate", "Доля находок"),
    "rules.author": ("Author", "Автор"),
    "rules.edit": ("Edit", "Изменить"),
    "rules.none": ("No rules yet.", "Правил пока нет."),
    "rules.description": ("Description", "Описание"),
    "rules.effective_from": ("In force from", "Действует с"),
    "rules.effective_to": ("In force until", "Действует по"),
    "rules.condition": ("Condition (YAML or JSON)", "Условие (YAML или JSON)"),
    "rules.condition_help": (
        "For example: any: [{field: item.hs_code, op: starts_with, value: '9305'}]",
        "Например: any: [{field: item.hs_code, op: starts_with, value: '9305'}]",
    ),
    "rules.save": ("Save as a new version", "Сохранить как новую версию"),
    "rules.create": ("Create rule", "Создать правило"),
    "rules.history": ("Version history", "История версий"),
    "rules.saved": (
        "Rule {id} saved as version {version}.",
        "Правило {id}: сохранена версия {version}.",
    ),
    "rules.invalid": (
        "The rule was not saved: fix the parts marked below.",
        "Правило не сохранено: исправьте отмеченные ниже места.",
    ),
    "rules.read_only": (
        "Your role may read rules but not change them.",
        "Ваша роль позволяет читать правила, но не изменять их.",
    ),
    "rules.yaml_error": (
        "Not readable YAML or JSON: {msg}",
        "Не читается как YAML или JSON: {msg}",
    ),
    "rules.condition_mapping": (
        "The condition must be a mapping (all / any / not / line / field).",
        "Условие должно быть словарём (all / any / not / line / field).",
    ),
    "rules.at": ("at {path}", "в {path}"),
    "rules.id_help": (
        "Lower-case letters, digits, - and _ (2 to 64).",
        "Строчные латинские буквы, цифры, - и _ (от 2 до 64).",
    ),
    # a new rule's id that is a word of the rules' own addresses (/web/rules/new ...)
    "rules.id_reserved": (
        "'{id}' is reserved for the rules' pages ({reserved}): choose another id.",
        "«{id}» зарезервировано для страниц правил ({reserved}): выберите другой идентификатор.",
    ),
    # models
    "models.title": ("Models", "Модели"),
    "models.champion": ("Champion", "Чемпион"),
    "models.challenger": ("Challenger", "Претендент"),
    "models.none": ("No model is registered yet.", "Зарегистрированных моделей нет."),
    "models.version": ("Version {v}", "Версия {v}"),
    "models.metric": ("Metric", "Показатель"),
    "models.value": ("Value", "Значение"),
    "models.test_window": ("Test window", "Тестовый период"),
    "models.inspected": ("Inspected shipments in the test window", "Досмотрено за тестовый период"),
    "models.positives": ("With arms findings", "С находками оружия"),
    "models.random": ("Random share (unbiased)", "Случайная доля (несмещённая)"),
    "models.pr_auc": ("PR AUC", "PR AUC"),
    "models.brier": ("Brier score", "Оценка Брайера"),
    "models.recall_at": ("Recall at {cap} capacity", "Полнота при загрузке {cap}"),
    "models.precision_at": ("Precision at {cap} capacity", "Точность при загрузке {cap}"),
    "models.true_recall_at": (
        "True share of trafficking caught at {cap} (synthetic world)",
        "Истинная доля выявленного при {cap} (синтетический мир)",
    ),
    # capacity figures say what the capacity is a share of (UAT2 DS F7, F9)
    "models.random_weighted": (
        "Random share (weighted by 1/selection probability)",
        "Случайная доля (с весом 1/вероятность отбора)",
    ),
    "models.precision_inspected_at": (
        "Precision, top {cap} of the inspected shipments",
        "Точность, верхние {cap} досмотренных",
    ),
    "models.recall_inspected_at": (
        "Recall, top {cap} of the inspected shipments",
        "Полнота, верхние {cap} досмотренных",
    ),
    "models.slots_at": (
        "Top {cap} of all shipments: slots, of them inspected, with a finding",
        "Верхние {cap} всех отправок: мест, из них досмотрено, с находкой",
    ),
    "models.true_precision_all_at": (
        "True precision, top {cap} of all shipments (synthetic world)",
        "Истинная точность, верхние {cap} всех отправок (синтетический мир)",
    ),
    "models.true_recall_all_at": (
        "True share of trafficking caught, top {cap} of all shipments (synthetic world)",
        "Истинная доля выявленного, верхние {cap} всех отправок (синтетический мир)",
    ),
    "models.plots": ("Evaluation report", "Отчёт об оценке"),
    "models.no_report": ("No evaluation report for this version.", "Нет отчёта об оценке."),
    # the model card of a version (UAT2 DS F18)
    "models.card": ("Model card", "Карточка модели"),
    "models.card_link": ("Model card of version {v}", "Карточка модели версии {v}"),
    "models.card_title": ("Model card: version {v}", "Карточка модели: версия {v}"),
    "models.card_back": ("Back to models", "К моделям"),
    "models.no_card": (
        "Version {v} has no model card: it was registered before cards were written. "
        "Retrain to get one.",
        "У версии {v} нет карточки модели: она зарегистрирована до того, как карточки "
        "стали записываться. Обучите модель заново.",
    ),
    "models.card_algorithm": ("Algorithm", "Алгоритм"),
    "models.card_target": ("Target", "Цель"),
    "models.card_feature_set": ("Feature set", "Набор признаков"),
    "models.card_data_hash": ("Data hash", "Хэш данных"),
    "models.card_code_version": ("Code version", "Версия кода"),
    "models.card_early_stopping": (
        "Number of trees chosen on",
        "Число деревьев выбрано по",
    ),
    "models.card_windows": ("Data windows", "Периоды данных"),
    "models.card_window": ("Window", "Период"),
    "models.card_from": ("From", "С"),
    "models.card_to": ("To", "По"),
    "models.card_rows": ("Inspected shipments", "Досмотрено отправок"),
    "models.card_positives": ("Findings (model's target)", "Находки (цель модели)"),
    "models.card_metrics": ("Metrics on the test window", "Показатели на тестовом периоде"),
    "models.card_excluded": ("Attributes never used", "Признаки, которые никогда не используются"),
    "models.card_limits": ("Known limits", "Известные ограничения"),
    "models.card_inputs": ("Model inputs", "Входы модели"),
    "models.card_left_out": ("Registered features left out", "Неиспользованные признаки"),
    "models.card_name": ("Name", "Имя"),
    "models.card_family": ("Family", "Семейство"),
    "models.card_description": ("Description", "Описание"),
    "models.card_reason": ("Why", "Почему"),
    "models.card_readers": (
        "Roles that may read models and their cards: {roles}",
        "Роли, которым доступны модели и их карточки: {roles}",
    ),
    "models.card_json": ("This card as JSON (API)", "Эта карточка в JSON (API)"),
    "models.promoted_by": ("Promoted by {who}: {why}", "Продвинул(а) {who}: {why}"),
    "models.all_versions": ("All versions", "Все версии"),
    "models.aliases": ("Aliases", "Метки"),
    "models.promote": ("Promote to champion", "Сделать чемпионом"),
    "models.promote_version": ("Version to promote", "Версия"),
    "models.promote_reason": ("Reason", "Причина"),
    "models.promote_force": (
        "Promote even if worse than the champion",
        "Продвинуть, даже если хуже чемпиона",
    ),
    "models.promote_submit": ("Promote", "Продвинуть"),
    "models.promote_unavailable": (
        "Promotion from this page is not available in this installation: "
        "use `caravan promote --version N --reason TEXT`.",
        "Продвижение с этой страницы недоступно: используйте "
        "`caravan promote --version N --reason TEXT`.",
    ),
    "models.promoted": ("Version {v} is now the champion.", "Версия {v} теперь чемпион."),
    "models.reason_required": ("A promotion needs a reason.", "Для продвижения нужна причина."),
    "models.version_unknown": ("No such model version.", "Нет такой версии модели."),
    "models.read_only": (
        "Your role may read models but not promote them.",
        "Ваша роль позволяет смотреть модели, но не продвигать их.",
    ),
    # audit
    "audit.title": ("Audit trail", "Журнал аудита"),
    "audit.shipment": ("Shipment id", "Номер отправки"),
    "audit.user": ("User", "Пользователь"),
    "audit.show": ("Show trail", "Показать"),
    "audit.verify": ("Verify the chain", "Проверить цепочку"),
    "audit.verify_ok": (
        "Chain intact: {n} entries, every hash checks.",
        "Цепочка цела: записей {n}, все хеши сходятся.",
    ),
    "audit.verify_broken": (
        "Chain BROKEN at entry {seq} ({entry}): {reason}",
        "Цепочка НАРУШЕНА на записи {seq} ({entry}): {reason}",
    ),
    "audit.replay": ("Replay the score", "Пересчитать оценку"),
    "audit.replay_title": ("Replay of shipment {id}", "Пересчёт отправки {id}"),
    "audit.stored": ("Stored probability", "Сохранённая вероятность"),
    "audit.recomputed": ("Recomputed probability", "Пересчитанная вероятность"),
    "audit.matches": ("Match", "Совпадение"),
    "audit.match_yes": (
        "yes: the stored score is reproduced",
        "да: сохранённая оценка воспроизведена",
    ),
    "audit.match_no": ("NO: the scores differ", "НЕТ: оценки различаются"),
    "audit.seq": ("Seq", "№"),
    "audit.at": ("When", "Когда"),
    "audit.kind": ("Event", "Событие"),
    "audit.actor": ("Who", "Кто"),
    "audit.details": ("Details", "Подробности"),
    "audit.none": ("No entries.", "Записей нет."),
    "audit.pick": (
        "Enter a shipment id or a user name to read its trail.",
        "Введите номер отправки или имя пользователя.",
    ),
    "audit.one_of": (
        "Give a shipment id or a user name, not both.",
        "Укажите номер отправки или пользователя, но не оба сразу.",
    ),
    "audit.bad_value": ("Not a valid value.", "Недопустимое значение."),
    "audit.model_missing": (
        "Model version {version} cannot be loaded: {msg}",
        "Версию модели {version} загрузить нельзя: {msg}",
    ),
    # what drove a priority (queue reasons)
    "reason.rule": ("Rule: {name} ({severity})", "Правило: {name} ({severity})"),
    "reason.rule_plain": ("Rule: {name}", "Правило: {name}"),
    "reason.watchlist": (
        "A party's name resembles a watchlist entry ({score}% similar)",
        "Наименование участника похоже на запись списка наблюдения (сходство {score}%)",
    ),
    "reason.watchlist_exact": (
        "A party or a linked traveller is on a watchlist (exact match: name or document)",
        "Участник сделки или связанный пассажир есть в списке наблюдения "
        "(точное совпадение: наименование или документ)",
    ),
    # rule severities
    "severity.info": ("information", "информация"),
    "severity.low": ("low", "низкая"),
    "severity.medium": ("medium", "средняя"),
    "severity.high": ("high", "высокая"),
    "severity.must_inspect": ("must inspect", "обязательный досмотр"),
    # transport modes
    "mode.road": ("road", "автомобильный"),
    "mode.rail": ("rail", "железнодорожный"),
    "mode.air": ("air", "воздушный"),
    "mode.sea": ("sea", "морской"),
    "mode.post": ("post", "почта"),
    "mode.express": ("express courier", "экспресс-доставка"),
    # finding categories
    "category.firearms": ("firearms", "огнестрельное оружие"),
    "category.parts": ("firearm parts", "части оружия"),
    "category.ammunition": ("ammunition", "боеприпасы"),
    "category.explosives": ("explosives", "взрывчатые вещества"),
    "category.dual_use": ("dual-use goods", "товары двойного назначения"),
    "category.other_contraband": ("other contraband", "иная контрабанда"),
    "category.documentary": ("documentary irregularity", "нарушение в документах"),
    # how a traveller record is linked to a party
    "link.same_person": ("same person", "то же лицо"),
    # (the link kind "phone" is a shared contact: a phone number or an e-mail address)
    "link.phone": ("same phone or e-mail", "тот же телефон или e-mail"),
    "link.address": ("same address", "тот же адрес"),
    "link.name_variant": ("name variant", "вариант имени"),
    # waiting times
    "age.days": ("{n} d", "{n} дн."),
    "age.hours": ("{n} h", "{n} ч"),
    "age.minutes": ("{n} min", "{n} мин"),
    # conflicts (a referral changed under the officer's hands)
    "conflict.title": ("Already taken", "Уже в работе"),
    "conflict.claimed_by": (
        "Referral {id} of shipment {shipment} is already claimed by {who}.",
        "Направление {id} по отправке {shipment} уже взято в работу: {who}.",
    ),
    "conflict.decided": (
        "Referral {id} of shipment {shipment} is already {status} (decided by {who}).",
        "Направление {id} по отправке {shipment} уже имеет статус «{status}» "
        "(решение принял(а) {who}).",
    ),
    "conflict.status": (
        "Referral {id} of shipment {shipment} is {status}: this action is not possible now.",
        "Направление {id} по отправке {shipment} имеет статус «{status}»: "
        "это действие сейчас невозможно.",
    ),
    "conflict.before_declaration": (
        "Shipment {shipment} is declared at {declared}, later than now: an inspection "
        "cannot come before its declaration. Record the outcome once that time has "
        "passed, or have the declaration's time checked.",
        "Отправка {shipment} задекларирована в {declared}, позже текущего времени: "
        "досмотр не может предшествовать декларации. Запишите результат после этого "
        "времени или проверьте время декларации.",
    ),
    "conflict.back_shipment": ("Back to shipment {shipment}", "К отправке {shipment}"),
    "conflict.back_queue": ("Back to the queue", "К очереди"),
    # the recorded result
    "ship.recorded": ("Recorded result", "Записанный результат"),
    "ship.recorded_finding": ("Finding", "Находка"),
    "ship.recorded_by": ("Recorded by {who} at {at}", "Записал(а) {who}, {at}"),
    "ship.claimed_ok": (
        "Referral claimed: record the result or a waiver.",
        "Направление взято в работу: запишите результат или отказ.",
    ),
    "err.quantity_ambiguous": (
        "“{value}” could be read with a thousands separator or a decimal mark: write the "
        "number without separators (for example 10000 or 10.5).",
        "«{value}» можно прочитать и с разделителем тысяч, и с десятичной запятой: "
        "запишите число без разделителей (например, 10000 или 10,5).",
    ),
    "err.purpose_short": (
        "State the purpose in at least {n} characters.",
        "Опишите цель не короче {n} знаков.",
    ),
    # audit paging
    "audit.showing": (
        "Showing entries {first} to {last} of {total} (oldest first).",
        "Показаны записи {first}–{last} из {total}.",
    ),
    "audit.older": ("Older entries", "Более ранние записи"),
    "audit.newer": ("Newest entries", "Последние записи"),
    # closing, releasing, displacement (shipment page)
    "ship.close": ("Close the referral", "Закрыть направление"),
    "ship.close_note": (
        "The case is done: the decision stays as recorded.",
        "Дело завершено: принятое решение сохраняется как записано.",
    ),
    "ship.closed_ok": ("Referral closed.", "Направление закрыто."),
    # correcting a recorded outcome or waiver
    "ship.correct": ("Correct this outcome", "Исправить результат"),
    "ship.correct_waiver": (
        "Correct this waiver: the goods were inspected",
        "Исправить отказ: досмотр был проведён",
    ),
    "ship.correct_note": (
        "The corrected outcome replaces the recorded one, and its label for training; "
        "the original stays in the audit trail.",
        "Исправленный результат заменяет записанный и его метку для обучения модели; "
        "исходная запись остаётся в журнале аудита.",
    ),
    "ship.correction_reason": ("Reason for the correction", "Причина исправления"),
    "ship.save_correction": ("Save the correction", "Сохранить исправление"),
    "ship.corrections": ("Corrections", "Исправления"),
    "ship.correction_line": (
        "{at}, {who}: {before} → {after}. Reason: {reason}",
        "{at}, {who}: {before} → {after}. Причина: {reason}",
    ),
    "ship.corrected_waiver": ("waiver «{reason}»", "отказ «{reason}»"),
    "ship.corrected_ok": ("Outcome corrected.", "Результат исправлен."),
    "ship.correct_forbidden": (
        "Only the officer who recorded the decision ({who}) or an administrator can correct it.",
        "Исправить решение может только записавший его сотрудник ({who}) или администратор.",
    ),
    "err.correction_reason_required": (
        "A correction needs a reason.",
        "Для исправления нужна причина.",
    ),
    "err.correction_unchanged": (
        "The outcome already holds these values: nothing to correct.",
        "Результат уже содержит эти значения: исправлять нечего.",
    ),
    "ship.release": ("Release the claim", "Вернуть в очередь"),
    "ship.release_note": (
        "Hands the referral back to the office's queue for another officer.",
        "Направление возвращается в очередь поста для другого инспектора.",
    ),
    "ship.release_other": (
        "Release {who}'s claim (administrator)",
        "Снять направление с {who} (администратор)",
    ),
    "ship.released_ok": (
        "Claim released: the referral is open in the queue again.",
        "Направление возвращено: оно снова открыто в очереди.",
    ),
    "ship.closed_by": ("closed by {who} at {at}", "закрыл(а) {who}, {at}"),
    "ship.displaced": (
        "Displaced: a later, higher-priority arrival took its place in the queue.",
        "Вытеснено: его место в очереди заняла более поздняя отправка с большим приоритетом.",
    ),
    "ship.displaced_by": (
        "Replaced by referral {id} (shipment {shipment})",
        "Заменено направлением {id} (отправка {shipment})",
    ),
    # left out of the queue (queue page)
    "queue.left_out_title": (
        "Red and yellow shipments that did not fit the capacity",
        "Красные и жёлтые отправки, не вошедшие в лимит",
    ),
    "queue.left_out_none": (
        "Every red and yellow shipment of the day is in the queue.",
        "Все красные и жёлтые отправки дня включены в очередь.",
    ),
    "queue.displaced": ("displaced by a later arrival", "вытеснено более поздней отправкой"),
    "queue.left_out_displaced": (
        "displaced (referral {id})",
        "вытеснена (направление {id})",
    ),
    # the queue's order (forced entries first by default)
    "queue.sort.forced_rank": (
        "must-inspect first, then rank",
        "сначала обязательные, затем место в очереди",
    ),
    "queue.order_default": (
        "Order: must-inspect entries (a must-inspect rule or an exact watchlist hit) "
        "first, then the rest by their place in the queue (#).",
        "Порядок: сначала обязательные к досмотру (правило «обязательный досмотр» или "
        "точное совпадение со списком наблюдения), затем остальные по месту в очереди (№).",
    ),
    "queue.order_priority": (
        "Order: highest priority first.",
        "Порядок: сначала с наибольшим приоритетом.",
    ),
    "queue.order_age": (
        "Order: longest waiting first (time since the shipment was declared).",
        "Порядок: сначала ожидающие дольше всех (время с момента декларирования).",
    ),
    "queue.forced": ("must inspect", "обязательный досмотр"),
    # rule activation (rules page)
    "rules.inactive": ("inactive: never evaluated", "не действует: не применяется"),
    "rules.status_action": ("Activation", "Включение"),
    "rules.deactivate": ("Deactivate", "Отключить"),
    "rules.activate": ("Activate", "Включить"),
    "rules.deactivate_reason": ("Reason for deactivating", "Причина отключения"),
    "rules.reason_required": (
        "A reason is required to deactivate a rule.",
        "Для отключения правила укажите причину.",
    ),
    "rules.reason_long": (
        "The reason is longer than {n} characters.",
        "Причина длиннее {n} знаков.",
    ),
    "rules.already_active": ("Rule {id} is already active.", "Правило {id} уже действует."),
    "rules.already_inactive": ("Rule {id} is already inactive.", "Правило {id} уже отключено."),
    "rules.deactivated_ok": (
        "Rule {id} deactivated: it no longer hits.",
        "Правило {id} отключено: оно больше не срабатывает.",
    ),
    "rules.activated_ok": (
        "Rule {id} activated again (its newest version).",
        "Правило {id} снова включено (последняя версия).",
    ),
    # applying the current rules to the shipments awaiting a decision (UAT2 A17)
    "rules.apply_help": (
        "A rule saved or changed acts on the shipments declared after it. To make the "
        "current rules reach today's shipments already declared and still awaiting a "
        "decision, apply them:",
        "Сохранённое или изменённое правило действует на декларации, поданные после "
        "этого. Чтобы текущие правила применились и к уже поданным сегодня декларациям, "
        "ещё ожидающим решения, примените их:",
    ),
    "rules.apply_open": ("Apply to waiting shipments…", "Применить к ожидающим отправкам…"),
    "rules.apply_title": (
        "Apply the rules to the shipments awaiting a decision",
        "Применение правил к отправкам, ожидающим решения",
    ),
    "rules.apply_confirm": (
        "Apply the newest version of every active rule (rules: {rules}) to the shipments "
        "declared on {day} (UTC) that still await a decision (shipments: {n})?",
        "Применить последние версии всех действующих правил (правил: {rules}) к "
        "отправкам, задекларированным {day} (UTC) и ещё ожидающим решения (отправок: {n})?",
    ),
    "rules.apply_confirm_local": (
        "Apply the newest version of every active rule (rules: {rules}) to the shipments "
        "declared today, each office's local day, that still await a decision "
        "(shipments: {n})?",
        "Применить последние версии всех действующих правил (правил: {rules}) к "
        "отправкам, задекларированным сегодня (по местному времени каждого поста) и ещё "
        "ожидающим решения (отправок: {n})?",
    ),
    "rules.apply_effect": (
        "A shipment whose rule hits change gets a new score: its priority and lane follow, "
        "and a must-inspect hit puts it in the queue. Shipments already inspected or "
        "waived are not touched. The application is recorded in the audit log.",
        "Отправка, у которой меняются сработавшие правила, получает новую оценку: меняются "
        "её приоритет и коридор, а правило «обязательный досмотр» ставит её в очередь. "
        "Уже досмотренные отправки и отправки с отказом от досмотра не затрагиваются. "
        "Применение записывается в журнал аудита.",
    ),
    "rules.apply_do": ("Apply the rules now", "Применить правила"),
    "rules.apply_cancel": ("Cancel", "Отмена"),
    "rules.applied_ok": (
        "Rules applied. Shipments awaiting a decision examined: {n}; changed: {changed}; "
        "now to be inspected (must-inspect): {forced}.",
        "Правила применены. Проверено отправок, ожидающих решения: {n}; изменено: "
        "{changed}; теперь обязательны к досмотру: {forced}.",
    ),
    # rule performance per version (rules page, rule page)
    "rules.perf_note": (
        "Hits, inspections and findings are those of the version shown beside them, "
        "counted over the shipments scored by this service. “Findings” counts every "
        "category (documentary irregularities included); “arms” counts only firearms, "
        "parts, ammunition and explosives. “All versions” covers the rule's whole "
        "history (a shipment hit by two versions counts once).",
        "Срабатывания, досмотры и находки относятся к версии, указанной рядом с ними, "
        "и считаются по декларациям, оценённым этой системой. «Находки» включают все "
        "категории (в том числе документальные нарушения); «оружие» — только "
        "огнестрельное оружие, его части, боеприпасы и взрывчатые вещества. «Все версии» — "
        "за всю историю правила (декларация, на которой сработали две версии, "
        "считается один раз).",
    ),
    "rules.arms_findings": ("Arms findings", "Находок оружия"),
    "rules.arms_finding_rate": ("Arms finding rate", "Доля находок оружия"),
    "rules.all_versions": ("All versions", "Все версии"),
    "rules.figures": (
        "{hits} hits · {inspected} inspected · {findings} findings ({arms} arms)",
        "срабатываний: {hits} · досмотрено: {inspected} · находок: {findings} (оружие: {arms})",
    ),
    "rules.rates": (
        "finding rate {rate} (arms {arms_rate})",
        "доля находок {rate} (оружие {arms_rate})",
    ),
    # testing a rule on the history (rule page)
    "rules.test_title": ("Test on the history", "Проверка на истории"),
    "rules.test_help": (
        "Counts which past shipments the rule as written here would have hit, each "
        "with the features known when it was declared, and what their inspections "
        "found. Nothing is saved.",
        "Показывает, на каких прошлых отправках сработало бы правило в этом виде (по "
        "признакам, известным на момент каждой декларации), и что нашли при их досмотре. "
        "Ничего не сохраняется.",
    ),
    "rules.test_since": ("From (UTC day)", "С (день UTC)"),
    "rules.test_until": ("To (UTC day)", "По (день UTC)"),
    "rules.test_every_day": (
        "Apply on every day (ignoring the effective dates)",
        "Применять во все дни (без учёта сроков действия)",
    ),
    "rules.test_do": ("Test on the history", "Проверить на истории"),
    "rules.test_result": ("Result on the history", "Результат на истории"),
    "rules.test_window": (
        "Shipments declared {first} – {last}: {n} examined.",
        "Отправки, заявленные {first} – {last}: проверено {n}.",
    ),
    "rules.test_without": (
        "{n} shipments received since features were last computed are not included.",
        "Не учтено отправок, поступивших после последнего расчёта признаков: {n}.",
    ),
    "rules.test_hits": (
        "Hits: {hits} ({share} of shipments, {per_day} per day)",
        "Срабатываний: {hits} ({share} отправок, {per_day} в день)",
    ),
    "rules.test_lift": (
        "Arms finding rate against all inspections of the window: {lift}×",
        "Доля находок оружия относительно всех досмотров периода: {lift}×",
    ),
    "rules.test_random": (
        "Inspected at random (the unbiased estimate): {n}, arms found in {arms} ({rate}); "
        "all random inspections of the window: {base_n}, arms in {base_arms} ({base_rate}).",
        "Досмотрено по случайному выбору (несмещённая оценка): {n}, оружие в {arms} "
        "({rate}); все случайные досмотры периода: {base_n}, оружие в {base_arms} "
        "({base_rate}).",
    ),
    "rules.test_bias": (
        "Rates over inspected shipments carry the bias of how they were chosen for "
        "inspection; the random draws do not.",
        "Доли по досмотренным отправкам смещены тем, как их выбирали для досмотра; "
        "случайный выбор такого смещения не имеет.",
    ),
    "rules.test_month": ("Month", "Месяц"),
    "rules.test_recent": ("Newest hits", "Последние срабатывания"),
    # audit head (audit page)
    "audit.head": (
        "Head of the log: entry {seq}, hash {hash}. Write down the value below: given "
        "later as the expected head, it shows whether entries were removed or rewritten.",
        "Последняя запись журнала: № {seq}, хеш {hash}. Запишите значение ниже: указанное "
        "позже как ожидаемое, оно покажет, были ли записи удалены или переписаны.",
    ),
    "audit.head_none": ("The log is empty.", "Журнал пуст."),
    "audit.expect": (
        "Expected head (SEQ:HASH, optional)",
        "Ожидаемая последняя запись (№:ХЕШ, необязательно)",
    ),
    "audit.expect_bad": (
        "Write the head as SEQ:HASH (a number, a colon and 64 hexadecimal characters).",
        "Укажите запись в виде №:ХЕШ (число, двоеточие и 64 шестнадцатеричных знака).",
    ),
    "audit.expected_ok": (
        "The recorded head {head} is still there with that hash.",
        "Записанная ранее запись {head} на месте, хеш совпадает.",
    ),
    "common.yes": ("yes", "да"),
    "common.no": ("no", "нет"),
}


def pick_lang(cookie: str | None, accept_language: str | None) -> str:
    """The cookie's language if valid, else the first supported one the browser asks for."""
    if cookie in LANGS:
        return str(cookie)
    if accept_language:
        weighted: list[tuple[float, int, str]] = []
        for i, part in enumerate(accept_language.split(",")):
            tag, _, params = part.strip().partition(";")
            q = 1.0
            if params.strip().startswith("q="):
                try:
                    q = float(params.strip()[2:])
                except ValueError:
                    q = 0.0
            weighted.append((-q, i, tag.strip().lower().split("-")[0]))
        for _q, _i, lang in sorted(weighted):
            if lang in LANGS:
                return lang
    return DEFAULT_LANG


class Translator:
    """`t(key, **values)` in one language; unknown keys are an error (caught by tests)."""

    def __init__(self, lang: str) -> None:
        if lang not in LANGS:
            raise ValueError(f"unsupported language {lang!r}")
        self.lang = lang
        self._index = LANGS.index(lang)

    def __call__(self, key: str, **values: Any) -> str:
        text = CATALOGUE[key][self._index]
        return text.format(**values) if values else text

    def lane(self, lane: str) -> str:
        return self(f"lane.{lane}") if f"lane.{lane}" in CATALOGUE else lane

    def status(self, status: str) -> str:
        return self(f"status.{status}") if f"status.{status}" in CATALOGUE else status

    def method(self, method: str) -> str:
        return self(f"method.{method}") if f"method.{method}" in CATALOGUE else method

    def role(self, role: str) -> str:
        return self(f"role.{role}") if f"role.{role}" in CATALOGUE else role

    def severity(self, severity: str | None) -> str:
        return self(f"severity.{severity}") if f"severity.{severity}" in CATALOGUE else ""

    def mode(self, mode: str | None) -> str:
        return self(f"mode.{mode}") if f"mode.{mode}" in CATALOGUE else str(mode or "")

    def category(self, category: str | None) -> str:
        key = f"category.{category}"
        return self(key) if key in CATALOGUE else str(category or "")

    def link(self, kind: str) -> str:
        return self(f"link.{kind}") if f"link.{kind}" in CATALOGUE else kind


def reason_text(reason: Mapping[str, Any], lang: str) -> str:
    """A stored reason's text in `lang` (reasons carry text_en and text_ru)."""
    return str(reason.get(f"text_{lang}") or reason.get("text_en") or reason.get("feature", ""))
