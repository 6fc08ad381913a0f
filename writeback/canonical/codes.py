"""Code systems: the names client apps use, mapped to the canonical FHIR system URIs.

Only the systems we write are known; anything else is refused rather than passed through, because a
code is meaningless without the system it belongs to.
"""

import re

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"

KNOWN_SYSTEMS = (SNOMED, LOINC, RXNORM, ICD10CM)

# Names are matched with case, spaces, hyphens and underscores ignored: "SNOMED CT" == "snomed-ct".
_NAMES = {
    "snomed": SNOMED,
    "snomedct": SNOMED,
    "snomedctus": SNOMED,
    "sct": SNOMED,
    "loinc": LOINC,
    "lnc": LOINC,
    "rxnorm": RXNORM,
    "icd10cm": ICD10CM,
}
# URIs and the HL7 OIDs of the same systems.
_URIS = {
    SNOMED: SNOMED,
    LOINC: LOINC,
    RXNORM: RXNORM,
    ICD10CM: ICD10CM,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "urn:oid:2.16.840.1.113883.6.90": ICD10CM,
}

DISPLAY_NAMES = {SNOMED: "SNOMED CT", LOINC: "LOINC", RXNORM: "RxNorm", ICD10CM: "ICD-10-CM"}

_SEPARATORS = re.compile(r"[\s_\-]+")


def system_uri(name: str) -> str | None:
    """The canonical URI for a system name, URI or OID we know, or None."""
    name = name.strip()
    uri = _URIS.get(name.rstrip("/")) or _URIS.get(f"urn:oid:{name}")
    if uri:
        return uri
    return _NAMES.get(_SEPARATORS.sub("", name.casefold()))


def normalize_code(system: str, code: str) -> str:
    """The code in its canonical spelling: ICD-10-CM codes are upper case by definition."""
    code = code.strip()
    return code.upper() if system == ICD10CM else code
