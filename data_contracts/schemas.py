"""The contracts of every Caravan input.

Column names follow the WCO Data Model where one fits (its class or data
element named in `wco`). Each contract yields its Polars schema
(`contract.polars_schema`), its strict pydantic model (`contract.pydantic_model()`)
and its row rules (`data_contracts.rules`), all from the definitions below.
"""

from __future__ import annotations

from data_contracts.fields import ID_PATTERN, Check, Column, Contract, Kind

PHONE_PATTERN = r"\+?[0-9][0-9 ()-]{5,19}"
EMAIL_PATTERN = r"[^@\s]+@[^@\s]+\.[^@\s]+"

MODES = ("road", "rail", "air", "sea", "post", "express")
# UN/ECE Recommendation 20 unit codes used on goods lines.
QUANTITY_UNITS = ("PCE", "KGM", "LTR", "MTR", "MTK", "SET", "PR", "NAR", "TNE", "CT")
SELECTION_METHODS = ("rule", "model", "random", "watchlist", "intelligence")
FINDING_CATEGORIES = (
    "firearms",
    "parts",
    "ammunition",
    "explosives",
    "dual_use",
    "other_contraband",
    "documentary",
)
ARMS_CATEGORIES = ("firearms", "parts", "ammunition", "explosives")
PAYMENT_FORMS = ("cash", "card", "bank_transfer", "invoice", "miles", "other")
DOCUMENT_TYPES = ("passport", "id_card", "travel_document", "other")
ENTITY_TYPES = ("individual", "entity")
# Realistic maxima of the integer columns (a larger value is a data error, and could
# not be stored as a 64-bit integer anyway).
MAX_PACKAGES = 10_000_000
MAX_LINE_NO = 99_999
MAX_BAGGAGE_PIECES = 99


def _party(role: str, wco: str, *, country: bool = True) -> tuple[Column, ...]:
    cols = [
        Column(
            f"{role}_id",
            Kind.STRING,
            f"{role.title()}'s identification number (tax or business registration), as declared",
            required=False,
            max_length=64,
            wco=f"{wco} identification",
        ),
        Column(
            f"{role}_name",
            Kind.STRING,
            f"{role.title()}'s name as declared (any script)",
            max_length=256,
            wco=f"{wco} name",
        ),
        Column(
            f"{role}_address",
            Kind.STRING,
            f"{role.title()}'s address as declared",
            required=False,
            max_length=512,
            wco=f"{wco} address",
        ),
        Column(
            f"{role}_phone",
            Kind.STRING,
            f"{role.title()}'s phone number",
            required=False,
            pattern=PHONE_PATTERN,
            wco=f"{wco} communication",
        ),
        Column(
            f"{role}_email",
            Kind.STRING,
            f"{role.title()}'s e-mail address",
            required=False,
            pattern=EMAIL_PATTERN,
            max_length=254,
            wco=f"{wco} communication",
        ),
        Column(
            f"{role}_birth_date",
            Kind.DATE,
            f"{role.title()}'s date of birth, when a natural person (sole trader, private "
            "importer)",
            required=False,
            personal=True,
        ),
        Column(
            f"{role}_document_number",
            Kind.STRING,
            f"{role.title()}'s identity document number (passport or ID card), when a "
            "natural person",
            required=False,
            max_length=32,
            personal=True,
        ),
    ]
    if country:
        cols.append(
            Column(
                f"{role}_country",
                Kind.STRING,
                f"{role.title()}'s country",
                required=False,
                check=Check.COUNTRY,
                wco=f"{wco} country",
            )
        )
    return tuple(cols)


SHIPMENTS = Contract(
    name="shipments",
    id_column="shipment_id",
    description="One consignment as declared to customs (goods declaration or manifest line).",
    columns=(
        Column(
            "shipment_id",
            Kind.STRING,
            "Caravan's id of the consignment",
            pattern=ID_PATTERN,
            wco="UCR",
        ),
        Column(
            "declaration_ref",
            Kind.STRING,
            "Goods declaration or manifest reference number",
            max_length=64,
            wco="Declaration identification (D014)",
        ),
        Column(
            "declared_at",
            Kind.DATETIME,
            "When the declaration was lodged (UTC)",
            wco="Acceptance date",
        ),
        Column(
            "expected_arrival_at",
            Kind.DATETIME,
            "Expected arrival at the office (UTC)",
            wco="Arrival date and time, estimated",
        ),
        Column(
            "mode",
            Kind.ENUM,
            "Mode of transport at the border",
            values=MODES,
            wco="Mode of transport at border",
        ),
        Column(
            "office_code",
            Kind.STRING,
            "Customs office or border post of entry",
            pattern=r"[A-Z]{2}[A-Z0-9-]{2,30}",
            wco="Office of entry",
        ),
        Column(
            "carrier_name",
            Kind.STRING,
            "Carrier",
            required=False,
            max_length=256,
            wco="Carrier name",
        ),
        Column(
            "conveyance_ref",
            Kind.STRING,
            "Vehicle plate, wagon, flight or voyage number",
            required=False,
            max_length=64,
            wco="Conveyance reference number",
        ),
        Column(
            "origin_country",
            Kind.STRING,
            "Country of origin of the goods (main)",
            check=Check.COUNTRY,
            wco="Origin country",
        ),
        Column(
            "dispatch_country",
            Kind.STRING,
            "Country of dispatch/export",
            check=Check.COUNTRY,
            wco="Exportation country",
        ),
        Column(
            "transit_countries",
            Kind.STRING_LIST,
            "Countries crossed on the way, in order",
            required=False,
            check=Check.COUNTRY_LIST,
            wco="Itinerary: routing country",
        ),
        Column(
            "destination_country",
            Kind.STRING,
            "Country of destination",
            check=Check.COUNTRY,
            wco="Destination country",
        ),
        *_party("consignor", "Consignor"),
        *_party("consignee", "Consignee"),
        *_party("declarant", "Declarant", country=False),
        Column(
            "gross_mass_kg",
            Kind.FLOAT,
            "Total gross mass in kg",
            check=Check.POSITIVE,
            wco="Total gross mass measure",
        ),
        Column(
            "package_count",
            Kind.INT,
            "Number of packages",
            check=Check.POSITIVE,
            maximum=MAX_PACKAGES,
            wco="Total package quantity",
        ),
        Column(
            "invoice_amount",
            Kind.FLOAT,
            "Total invoice amount",
            check=Check.POSITIVE,
            wco="Total invoice amount",
        ),
        Column(
            "invoice_currency",
            Kind.STRING,
            "Currency of the invoice amount (ISO 4217)",
            check=Check.CURRENCY,
            wco="Invoice currency",
        ),
        Column(
            "container_ids",
            Kind.STRING_LIST,
            "Container or trailer ids",
            required=False,
            wco="Transport equipment identification",
        ),
        Column(
            "seal_ids", Kind.STRING_LIST, "Seal numbers", required=False, wco="Seal identification"
        ),
    ),
)

ITEMS = Contract(
    name="items",
    id_column="item_id",
    description="One goods line of a consignment.",
    parents={"shipment_id": "shipments"},
    columns=(
        Column("item_id", Kind.STRING, "Caravan's id of the goods line", pattern=ID_PATTERN),
        Column("shipment_id", Kind.STRING, "Consignment the line belongs to", pattern=ID_PATTERN),
        Column(
            "line_no",
            Kind.INT,
            "Goods item sequence number",
            check=Check.POSITIVE,
            maximum=MAX_LINE_NO,
            wco="Goods item sequence number",
        ),
        Column(
            "hs_code",
            Kind.STRING,
            "Commodity code, 6 to 10 digits (HS 2022 based)",
            check=Check.HS_CODE,
            wco="Commodity classification",
        ),
        Column(
            "description",
            Kind.STRING,
            "Description of goods as declared (any language)",
            max_length=512,
            wco="Description of goods",
        ),
        Column(
            "quantity",
            Kind.FLOAT,
            "Quantity in the unit below",
            check=Check.POSITIVE,
            wco="Supplementary quantity",
        ),
        Column("quantity_unit", Kind.ENUM, "UN/ECE Rec. 20 unit code", values=QUANTITY_UNITS),
        Column(
            "net_mass_kg",
            Kind.FLOAT,
            "Net mass in kg",
            check=Check.POSITIVE,
            wco="Net weight measure",
        ),
        Column(
            "value",
            Kind.FLOAT,
            "Line value in the shipment's invoice currency",
            check=Check.POSITIVE,
            wco="Item invoice amount",
        ),
        Column(
            "origin_country",
            Kind.STRING,
            "Country of origin of this line",
            check=Check.COUNTRY,
            wco="Origin country",
        ),
    ),
)

TRAVELLERS = Contract(
    name="travellers",
    id_column="traveller_record_id",
    description="One API/PNR record: one traveller on one journey.",
    columns=(
        Column("traveller_record_id", Kind.STRING, "Id of this API/PNR record", pattern=ID_PATTERN),
        Column(
            "pnr_locator",
            Kind.STRING,
            "Booking reference (PNR record locator)",
            required=False,
            max_length=16,
        ),
        Column(
            "surname",
            Kind.STRING,
            "Surname as on the travel document (Latin)",
            max_length=128,
            personal=True,
        ),
        Column(
            "given_names",
            Kind.STRING,
            "Given names as on the travel document (Latin)",
            required=False,
            max_length=128,
            personal=True,
        ),
        Column(
            "name_native",
            Kind.STRING,
            "Full name in the native script (e.g. Cyrillic)",
            required=False,
            max_length=256,
            personal=True,
        ),
        Column("date_of_birth", Kind.DATE, "Date of birth", personal=True),
        Column(
            "nationality",
            Kind.STRING,
            "Nationality (ISO 3166-1 alpha-2); a protected "
            "trait, never a model feature unless explicitly allowed",
            check=Check.COUNTRY,
            personal=True,
        ),
        Column("document_type", Kind.ENUM, "Travel document type", values=DOCUMENT_TYPES),
        Column(
            "document_number", Kind.STRING, "Travel document number", max_length=32, personal=True
        ),
        Column(
            "document_country", Kind.STRING, "Issuing country of the document", check=Check.COUNTRY
        ),
        Column("booked_at", Kind.DATETIME, "When the booking was made", required=False),
        Column("departure_at", Kind.DATETIME, "Departure of the first leg"),
        Column(
            "route",
            Kind.STRING_LIST,
            "Ports of the journey in order (IATA or station "
            "codes), first is departure, last is arrival",
        ),
        Column(
            "route_countries",
            Kind.STRING_LIST,
            "Country of each port in `route`",
            check=Check.COUNTRY_LIST,
        ),
        Column("mode", Kind.ENUM, "Mode of the journey", values=("air", "rail", "road")),
        Column(
            "carrier_code",
            Kind.STRING,
            "Carrier code (airline, rail or bus operator)",
            required=False,
            max_length=8,
        ),
        Column("one_way", Kind.BOOL, "Booking has no return journey"),
        Column("payment_form", Kind.ENUM, "Form of payment", values=PAYMENT_FORMS, required=False),
        Column("travel_agency", Kind.STRING, "Booking agency", required=False, max_length=128),
        Column(
            "contact_phone",
            Kind.STRING,
            "Contact phone in the booking",
            required=False,
            pattern=PHONE_PATTERN,
            personal=True,
        ),
        Column(
            "contact_email",
            Kind.STRING,
            "Contact e-mail in the booking",
            required=False,
            pattern=EMAIL_PATTERN,
            max_length=254,
            personal=True,
        ),
        Column(
            "contact_address",
            Kind.STRING,
            "Contact address in the booking",
            required=False,
            max_length=512,
            personal=True,
        ),
        Column(
            "baggage_pieces",
            Kind.INT,
            "Checked bags",
            required=False,
            check=Check.NON_NEGATIVE,
            maximum=MAX_BAGGAGE_PIECES,
        ),
        Column(
            "baggage_kg",
            Kind.FLOAT,
            "Checked baggage weight",
            required=False,
            check=Check.NON_NEGATIVE,
        ),
        Column(
            "group_id",
            Kind.STRING,
            "Id shared by travellers booked together",
            required=False,
            max_length=32,
        ),
    ),
)

OUTCOMES = Contract(
    name="outcomes",
    id_column="outcome_id",
    description="Result of one inspection (or documentary check) of a consignment.",
    parents={"shipment_id": "shipments"},
    columns=(
        Column("outcome_id", Kind.STRING, "Id of this inspection result", pattern=ID_PATTERN),
        Column("shipment_id", Kind.STRING, "Inspected consignment", pattern=ID_PATTERN),
        Column("inspected_at", Kind.DATETIME, "When the inspection was completed"),
        Column("officer_id", Kind.STRING, "Officer who inspected", max_length=64),
        Column(
            "selection_method",
            Kind.ENUM,
            "Why the shipment was inspected",
            values=SELECTION_METHODS,
        ),
        Column(
            "selection_rule",
            Kind.STRING,
            "Rule or profile that selected it, if any",
            required=False,
            max_length=128,
        ),
        Column(
            "selection_probability",
            Kind.FLOAT,
            "Probability with which the policy in force selected it (1 for a must-inspect rule)",
            check=Check.PROBABILITY,
        ),
        Column("finding", Kind.BOOL, "Whether anything was found"),
        Column(
            "finding_category",
            Kind.ENUM,
            "What was found (empty when nothing)",
            values=FINDING_CATEGORIES,
            required=False,
        ),
        Column(
            "quantity_seized",
            Kind.FLOAT,
            "Quantity seized",
            required=False,
            check=Check.NON_NEGATIVE,
        ),
        Column(
            "seized_unit",
            Kind.ENUM,
            "Unit of the quantity seized",
            values=QUANTITY_UNITS,
            required=False,
        ),
        Column("notes", Kind.STRING, "Officer's notes", required=False, max_length=2000),
    ),
)

WATCHLIST = Contract(
    name="watchlist",
    id_column="entry_id",
    description="A person or entity on a sanctions or national watchlist.",
    allow_bidi=True,  # original-script names as the publisher wrote them
    columns=(
        Column(
            "entry_id",
            Kind.STRING,
            "Id unique across lists: '<list>:<reference>'",
            pattern=r"[A-Za-z0-9][A-Za-z0-9._:/ -]{0,127}",
        ),
        Column("list_name", Kind.STRING, "Which list (e.g. UN-SC, KZ-national)", max_length=64),
        Column("reference_number", Kind.STRING, "The list's own reference", max_length=64),
        Column("entity_type", Kind.ENUM, "Individual or entity", values=ENTITY_TYPES),
        Column("name", Kind.STRING, "Primary name (Latin)", max_length=512),
        Column("aliases", Kind.STRING_LIST, "Other names and spellings", required=False),
        Column(
            "name_original_script",
            Kind.STRING,
            "Name in its original script",
            required=False,
            max_length=512,
        ),
        Column(
            "dates_of_birth",
            Kind.STRING_LIST,
            "Dates or years of birth as listed (YYYY-MM-DD or YYYY)",
            required=False,
        ),
        Column("nationalities", Kind.STRING_LIST, "Nationalities as listed", required=False),
        Column("document_numbers", Kind.STRING_LIST, "Passport and ID numbers", required=False),
        Column("addresses", Kind.STRING_LIST, "Addresses as listed", required=False),
        Column("listed_on", Kind.DATE, "Date of listing", required=False),
        Column("comments", Kind.STRING, "Remarks", required=False),
    ),
)

CONTRACTS: dict[str, Contract] = {
    c.name: c for c in (SHIPMENTS, ITEMS, TRAVELLERS, OUTCOMES, WATCHLIST)
}
# Inputs read from raw/ by `caravan validate`, parents first.
RAW_TABLES: tuple[str, ...] = ("shipments", "items", "travellers", "outcomes")
