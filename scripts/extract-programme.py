#!/usr/bin/env python3
"""Extract the 2021 programme of "Samen tegen mensenhandel" into progsync sample records.

Usage:
    python3 scripts/extract-programme.py SEED.txt > OUT.json

SEED.txt is shared/seeds/programmaresultaten-samen-tegen-mensenhandel-2021.txt: the results
table of the programme, extracted from a PDF. Every PDF page became one block of
tab-separated rows (Nr. / Resultaat / Activiteiten / Stand van zaken / Toelichting) preceded by
a theme heading and a header row, and followed by a "Legenda:" block and sometimes footnotes.

Output: {"format": "progsync-records/1", "source": ..., "records": [...]}, records flat and in
document order (action line, its results, each result followed by its activities).

Notes on what the extraction cannot know are written to stderr, never into the JSON.
Standard library only.
"""

import json
import re
import sys

FORMAT = "progsync-records/1"
SOURCE = "Programmaresultaten Samen tegen mensenhandel, 16 november 2021"

# The ministry of JenV publishes the document and coordinates the programme, so it owns the
# action lines and results; activities get an owner only from their own explanation text.
PROGRAMME_OWNER = "jenv"

HEADER_PREFIX = "Nr.\tResultaat (doelstelling)"
ACTION_LINE_RE = re.compile(r"^Actielijn (\d+): (.+)$")
FOOTNOTE_RE = re.compile(r"^([¹²³⁴⁵⁶⁷⁸⁹⁰]+)\s+(.+)$")
END_MARKER = "Dit is een uitgave van"

# --------------------------------------------------------------------------------------------
# Status symbols
#
# The legend printed under each page maps that page's symbols to the seven states. The PDF
# extraction rendered the same icon differently from page to page (the "delayed" icon shows up
# as 📅⌚, 🕒, 📅🕒 or 📅🔄; "not started" as 🔄, ⌚ or 🕒), so a row's symbol is looked up in the
# legend of its own page first: a page's rows come right before its legend. Only where that
# legend lost its symbols do we fall back to DEFAULT_SYMBOLS, which holds the symbols that mean
# the same thing in every legend of the document. A symbol found in neither is an error.
# --------------------------------------------------------------------------------------------

LEGEND_LABELS = {
    "Voltooid": "completed",
    "Doorlopend": "ongoing",
    "In uitvoering en volgens planning": "on-track",
    "In uitvoering maar met vertraging": "delayed",
    "Nog niet in uitvoering": "not-started",
    "In (formele) consultatie": "in-consultation",
    "Niet van toepassing": "not-applicable",
}

DEFAULT_SYMBOLS = {
    "✓": "completed",
    "∞": "ongoing",
    "📅": "on-track",
    "☑": "on-track",
    "📅⌚": "delayed",
    "📅🕒": "delayed",
    "🗨": "in-consultation",
    "📄": "in-consultation",
    "✗": "not-applicable",
    "🔄": "not-started",
    # Deliberately absent: ⌚, 🕒 and 📅🔄, which different legends give different meanings.
}

# Everything that may appear in a "Stand van zaken" cell; used to recognise that column even
# in rows whose leading tabs were lost.
STATUS_CELL_RE = re.compile(r"^[\s/✓∞✗☑⌚📅🕒🔄🗨📄\ufe0f]*[✓∞✗☑⌚📅🕒🔄🗨📄][\s/✓∞✗☑⌚📅🕒🔄🗨📄\ufe0f]*$")

COMPLETED = "completed"  # see combine_status


def norm_symbol(s):
    """Drop variation selectors and spaces so 🗨️ and 🗨 compare equal."""
    return "".join(ch for ch in s if ch not in "\ufe0f \t\xa0")


def parse_legend_entry(text):
    """'- ✓ Voltooid' -> ('✓', 'completed'); '-  Voltooid' (symbol lost) -> (None, 'completed').
    Returns None if the line is not a legend entry."""
    t = text.strip().lstrip("-").strip()
    for label, code in LEGEND_LABELS.items():
        if t.endswith(label):
            sym = norm_symbol(t[: -len(label)])
            return (sym or None, code)
    return None


# --------------------------------------------------------------------------------------------
# Organisations
#
# Keyword table: regex -> org code. Matching is done on the explanation text with URLs removed;
# overlapping matches keep the longest (so "Inspectie SZW" is nla, not szw).
# --------------------------------------------------------------------------------------------

ORGS = [
    ("nla", r"\b[Ii]nspectie I?SZW\b|\bISZW\b|(?:Nederlandse )?Arbeidsinspectie\b"),
    ("szw", r"\bSZW\b|[Mm]inisterie van Sociale Zaken(?: en Werkgelegenheid)?"),
    # AVIM is the police's own migration/trafficking department.
    ("politie", r"\b[Pp]olitie\b|\bAVIM\b"),
    ("om", r"\bOM\b|\bOpenbaar(?:e)? [Mm]inisterie\b"),
    ("kmar", r"\bKMar\b|Koninklijke Marechaussee"),
    ("ind", r"\bIND\b"),
    ("coa", r"\bCOA\b"),
    ("dtv", r"\bDT&V\b|Dienst Terugkeer en Vertrek"),
    ("comensha", r"\bCoMensha\b"),
    ("fairwork", r"\bFairWork(?: Academie)?\b"),
    # "Justitie en Veilig" is a typo in the document (result 29).
    ("jenv", r"\bJenV\b|(?:[Mm]inisterie van )?Justitie en Veilig(?:heid)?\b"),
    ("vws", r"\bVWS\b"),
    ("bz", r"\bBZ\b|Buitenlandse Zaken"),
    ("ocw", r"\bOCW\b"),
    ("bzk", r"\bBZK\b"),
    ("knmg", r"\bKNMG\b"),
    ("ccv", r"\bCCV\b|Centrum voor Criminaliteitspreventie en Veiligheid"),
    # Only the association itself: "gemeenten" in general are not one organisation.
    ("vng", r"\bVNG\b|Vereniging van Nederlandse Gemeenten"),
    ("veilig-thuis", r"\bVeilig Thuis\b"),
    ("jeugdzorg-nl", r"\bJeugdzorg Nederland\b"),
    ("nrm", r"\bNationaal? Rapporteurs?\b|\bB?NRM\b"),
    # CKM = Centrum tegen Kinderhandel en Mensenhandel. Note that "Landelijk Coördinatiecentrum"
    # (LCC, a police unit) must not match here.
    ("ckm", r"\bCKM\b|Centrum tegen Kinderhandel en Mensenhandel"),
    ("schiphol", r"(?:Royal )?\bSchiphol\b(?: Group)?"),
    ("iom", r"\bIOM\b|Internationale Organisatie voor Migratie"),
    # "UNOCD" is a typo for UNODC in the document (result 24).
    ("unodc", r"\bUNODC\b|\bUNOCD\b|VN Bureau voor Drugs en Criminaliteit"),
    # Further organisations the text names, in the same style.
    ("wodc", r"\bWODC\b"),
    ("fiu", r"\bFIU\b(?:[- ]Nederland\b)?|Financial Intelligence Unit(?: Nederland)?"),
    ("cbs", r"\bCBS\b"),
    ("emm", r"\bEMM\b|Expertisecentrum Mensenhandel (?:en )?Mensensmokkel"),
    ("riec", r"\bRIEC(?:'s)?\b(?: Noord-Holland)?"),
    ("kenniscentrum-lvb", r"(?:Landelijk )?[Kk]enniscentrum LVB\b"),
    ("koraal", r"\bKoraal\b"),
    ("school-en-veiligheid", r"(?:Stichting )?School en Veiligheid"),
    ("defence-for-children", r"Defence for Children(?:-ECPAT)?"),
    ("fier", r"\bFier\b"),
    ("sterk-huis", r"\bSterk Huis\b"),
    ("pretty-woman", r"\bPretty Woman\b"),
    ("lumens", r"\bLumens\b"),
    ("valente", r"\bValente\b"),
    ("nji", r"\bNJI\b|Nederlands Jeugdinstituut"),
    ("zonmw", r"\bZonMw\b"),
    ("icao", r"\bICAO\b|International Civil Aviation Organi[sz]ation"),
    ("unhcr", r"\bUNHCR\b|[Hh]oge [Cc]ommissaris voor de Vluchtelingen"),
    ("ohchr", r"\bOHCHR\b|Hoge Vertegenwoordiger voor Mensenrechten"),
    ("icmpd", r"\bICMPD\b"),
    ("europol", r"\bEuropol\b"),
    ("fnv", r"\bFNV\b"),
    ("regioplan", r"\bRegioplan\b"),
    ("schadefonds", r"\bSchadefonds\b(?: Gewel+d?smisdrijven)?"),
    ("ela", r"European Labour Authority|Europese Arbeidsautoriteit|\bELA\b"),
]
ORG_PATTERNS = [(code, re.compile(rx)) for code, rx in ORGS]

# International and intergovernmental bodies appear as partners but never as owners: they are
# what the programme funds, joins or lobbies (e.g. "ICAO heeft op initiatief van Nederland ...
# aangenomen"), not partners who keep the programme's records, so naming one as owner would
# misstate who answers for the activity.
NEVER_OWNER = {"iom", "unodc", "icao", "unhcr", "ohchr", "icmpd", "europol", "ela"}

URL_RE = re.compile(r"https?://\S+")


def find_orgs(text):
    """All organisation mentions as (start, end, code), left to right, longest match wins."""
    hits = []
    for code, rx in ORG_PATTERNS:
        for m in rx.finditer(text):
            hits.append((m.start(), m.end(), code))
    hits.sort(key=lambda h: (h[0], -(h[1] - h[0])))
    out, end = [], -1
    for h in hits:
        if h[0] >= end:
            out.append(h)
            end = h[1]
    return out


# Owner rule
# ----------
# The owner is the organisation that is the acting subject of the explanation's first sentence.
# Dutch puts the finite verb second, so the subject is found in one of three places:
#   R1  at the start, before the first finite verb:      "De politie startte een pilot ..."
#                                                        "CoMensha en KNMG organiseren ..."
#   R2  right after the first finite verb (inversion):    "In 2018 en 2019 heeft de FairWork
#                                                        Academie ... verzorgd"
#   R3  as the passive agent, "door X" / "vanuit X":      "Door JenV en VWS is ... ontwikkeld",
#                                                        "Vanuit JenV is ...", "... zijn door
#                                                        CoMensha ... georganiseerd"
# The first organisation of that subject is the owner; organisations coordinated with it
# ("X en Y") become partners like every other organisation named in the explanation.
# Deliberately no owner when:
#   - the subject is not an organisation ("Er is ...", "Nederland financiert ...",
#     "De partnerorganisaties binnen het EMM ..."): being named elsewhere is not enough;
#   - the verb is passive/copular (is/zijn/wordt/worden/werd/werden) without a "door" agent,
#     except for the perfect tense of "beginnen"/"starten" ("is ... een verkenning begonnen");
#   - the predicate says the subject did not carry it out ("heeft aangegeven ...", "werkte mee");
#   - the subject is an international body (NEVER_OWNER below).
# Only the first sentence is used: later sentences typically name partners, audiences or
# follow-ups, and guessing from them produced wrong owners.

FINITE_VERBS = set("""
heeft hebben had hadden is zijn was waren wordt worden werd werden zal zullen kan kunnen
moet moeten wil willen gaat gaan ging gingen staat staan stond ligt liggen lag loopt lopen liep
komt komen kwam vindt vinden vond vonden geeft geven gaf krijgt krijgen kreeg
start starten startte startten ontwikkelt ontwikkelen ontwikkelde ontwikkelden
organiseert organiseren organiseerde organiseerden financiert financieren financierde
ondersteunt ondersteunen ondersteunde voert voeren voerde voerden werkt werken werkte werkten
biedt bieden bood bevordert bevorderen bevorderde zet zetten zette neemt nemen nam sluit sluiten
verzorgt verzorgen leidt leiden coördineert coördineren gebruikt gebruiken pleit pleiten
bespreekt bespreken beziet bezien levert leveren leverde stelden stelt stellen richt richten
beheert beheren bestaat bestaan
""".split())
PASSIVE_OR_COPULA = {"is", "zijn", "was", "waren", "wordt", "worden", "werd", "werden"}
ACTIVE_WITH_ZIJN_RE = re.compile(r"\b(begonnen|gestart)\b")
NON_AGENT_RE = re.compile(r"^(?:heeft|hebben) aangegeven\b|^werk(?:t|te|ten|en) mee\b")
AGENT_RE = re.compile(r"^(Door|Vanuit)\s+(.{1,140}?)\s+(?:is|zijn|wordt|worden|werd|werden)\b")
ABBREVIATIONS = {"o.a", "m.b.t", "t.b.v", "m.n", "jl", "nr", "Sr", "i.v.m", "bijv", "e.d", "ca", "t/m"}


def first_sentence(text):
    for m in re.finditer(r"[.!?]\s+", text):
        before = re.search(r"(\S+)$", text[: m.start()])
        after = text[m.end(): m.end() + 1]
        if before and before.group(1) in ABBREVIATIONS:
            continue
        if after and (after.isupper() or after.isdigit()):
            return text[: m.start() + 1]
    return text


def subject_np(s, pos, orgs):
    """Parse '(de|het)? ORG ((, | en ) (de|het)? ORG)*' at s[pos:]; returns ([codes], end) or None."""
    codes, i = [], pos
    while True:
        m = re.match(r"(?:[Dd]e |[Hh]et )?", s[i:])
        j = i + m.end()
        org = next((o for o in orgs if o[0] == j), None)
        if not org:
            break
        codes.append(org[2])
        i = org[1]
        m = re.match(r" \([^)]{1,20}\)", s[i:])  # "(ICAO)" after the full name
        if m:
            i += m.end()
        m = re.match(r",? en |, ", s[i:])
        if not m:
            break
        i += m.end()
    if not codes:
        return None
    # Back off a trailing ", " / " en " that was not followed by an organisation.
    end = i
    while end > pos and s[end - 1] in " ,":
        end -= 1
    if s[end - 3: end] == " en":
        end -= 3
    return codes, end


def owner_of(explanation):
    """Owner org code per the rule above, or None."""
    owner = subject_owner(explanation)
    return None if owner in NEVER_OWNER else owner


def subject_owner(explanation):
    text = URL_RE.sub("", explanation).replace("\n", " ")
    s = first_sentence(text)
    s = re.sub(r"^\d+(?:\.\d+)*\s+", "", s)  # "3.1 Maandelijks overleg ..." numbering
    orgs = find_orgs(s)

    # R3a: fronted passive agent, "Door X is ..." / "Vanuit X is ...".
    m = AGENT_RE.match(s)
    if m:
        agent = [o for o in orgs if o[0] >= m.start(2) and o[1] <= m.end(2)]
        return agent[0][2] if agent else None

    tokens = [(t.start(), t.end(), t.group()) for t in re.finditer(r"[\w'-]+", s)]

    def verb_ok(k):
        verb = tokens[k][2]
        rest = s[tokens[k][0]:]
        if NON_AGENT_RE.match(rest):
            return False
        if verb in PASSIVE_OR_COPULA:
            return verb in ("is", "zijn") and bool(ACTIVE_WITH_ZIJN_RE.search(s))
        return True

    # R1: the sentence opens with the subject.
    np_ = subject_np(s, 0, orgs)
    if np_:
        codes, end = np_
        k = next((k for k, t in enumerate(tokens) if t[0] >= end), None)
        if k is not None and tokens[k][2] in FINITE_VERBS and s[end:tokens[k][0]].strip() == "":
            return codes[0] if verb_ok(k) else None
        return None

    # Otherwise find the first finite verb; a nominalised or "te" infinitive ("het ontwikkelen
    # van", "te verbeteren") is not a finite verb.
    for k, (start, end, word) in enumerate(tokens):
        if word not in FINITE_VERBS:
            continue
        if k > 0 and tokens[k - 1][2].lower() in ("het", "te"):
            continue
        after = end + 1
        # R3b: "... zijn door CoMensha ... georganiseerd".
        if word in PASSIVE_OR_COPULA and s[end:].startswith(" door "):
            np_ = subject_np(s, end + len(" door "), orgs)
            return np_[0][0] if np_ else None
        # R2: inverted subject right after the verb.
        np_ = subject_np(s, after, orgs)
        if np_ and verb_ok(k):
            return np_[0][0]
        return None
    return None


def orgs_named(text):
    """Every org code named in the text (URLs removed), in order of first mention."""
    seen = []
    for _, _, code in find_orgs(URL_RE.sub("", text)):
        if code not in seen:
            seen.append(code)
    return seen


# --------------------------------------------------------------------------------------------
# Text cleanup
# --------------------------------------------------------------------------------------------

def clean_text(s):
    """Strip HTML-ish tags keeping their text; <p>/<ul>/<li> and bullets become paragraph
    breaks ("\\n"); whitespace inside a paragraph collapses to single spaces."""
    s = re.sub(r"</?(?:p|ul|ol|li|br)\b[^>]*>", "\n", s)
    s = re.sub(r"<[^>]+>", "", s)
    s = re.sub(r"\s*•\s*", "\n• ", s)
    paras = []
    for p in s.split("\n"):
        p = re.sub(r"[ \t\xa0]+", " ", p).strip()
        p = re.sub(r" ([.,;:])(?=\s|$)", r"\1", p)  # "organiseren ." -> "organiseren."
        if p:
            paras.append(p)
    return "\n".join(paras)


def same_title(a, b):
    """Result titles repeated on continuation pages may be re-hyphenated ("Voorde-wind")."""
    key = lambda t: re.sub(r"[\W_]+", "", t).lower()
    return key(a) == key(b)


# --------------------------------------------------------------------------------------------
# Table rows
# --------------------------------------------------------------------------------------------

ACT_NUM_RE = re.compile(r"^(\d+)\.(?:\s+(.*)|)$", re.S)


def normalise_row(line, lineno, warn):
    """Split a table row into its five columns, repairing rows whose leading tabs were lost.

    Column count alone is not reliable: line 61 (activity 12 of result 1) lost a leading tab
    but kept a trailing one, and the "Longread mensenhandel" row of result 31 lost two leading
    tabs and gained two trailing ones. So the row is anchored on content: a status-symbol cell
    belongs in column 3, a numbered activity ("12. Training ...") in column 2. Rows without
    either anchor are taken as they are.
    """
    cells = [c.strip() for c in line.split("\t")]
    shift = 0
    status_at = [i for i, c in enumerate(cells) if c and STATUS_CELL_RE.match(c)]
    if status_at:
        shift = 3 - status_at[0]
    else:
        # Only the first three cells can hold a displaced activity; "1.1 ..." in an
        # explanation never matches (a space must follow the number's dot).
        act_at = [i for i, c in enumerate(cells[:3])
                  if ACT_NUM_RE.match(c) and ACT_NUM_RE.match(c).group(2)]
        if act_at:
            shift = 2 - act_at[0]
    if shift < 0:
        # Extra tabs rather than lost ones: never seen in this document, so do not guess.
        raise SystemExit(f"line {lineno}: row has content right of its expected column")
    if shift:
        cells = [""] * shift + cells
        warn(f"line {lineno}: row realigned by {shift} column(s) (lost leading tabs)")
    while len(cells) > 5 and cells[-1] == "":
        cells.pop()
    if len(cells) != 5:
        warn(f"line {lineno}: expected 5 columns, got {len(cells)}; padding on the right")
        cells = (cells + [""] * 5)[:5]
    return cells


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------

class Activity:
    def __init__(self, result, number, title, lineno, inferred=False):
        self.result = result
        self.number = number
        self.title = title
        self.lineno = lineno
        self.inferred = inferred
        self.statuses = []   # (raw symbol string, legend index) per status-bearing row
        self.paras = []      # explanation paragraphs, raw (tags still in)


def parse(lines, warn):
    footnotes = {}
    for line in lines:
        m = FOOTNOTE_RE.match(line.strip())
        if m:
            footnotes[m.group(1)] = m.group(2).strip()

    action_lines, results = [], []
    legends = []          # one {symbol: code} per "Legenda:" block, in order
    state = "front"       # front | between | table | legend | end
    heading = None        # last free-standing line: the theme heading above the next table
    al = res = act = None

    def add_status(a, raw):
        # Rows are before their page's legend, whose index is the number of legends seen so far.
        a.statuses.append((raw, len(legends)))

    for lineno, line in enumerate(lines, 1):
        text = line.strip()
        if state == "end":
            break
        if text.startswith(END_MARKER):
            state = "end"
            continue
        m = ACTION_LINE_RE.match(text)
        if m and "\t" not in line:  # table-of-contents lines carry tabs and page numbers
            al = {"number": int(m.group(1)), "title": m.group(2).strip(), "results": []}
            if action_lines and al["number"] != action_lines[-1]["number"] + 1:
                warn(f"line {lineno}: action line {al['number']} out of sequence")
            action_lines.append(al)
            state = "between"
            continue
        if state == "front":
            continue
        if line.startswith(HEADER_PREFIX):
            state = "table"
            continue
        if text == "Legenda:":
            legends.append({})
            state = "legend"
            continue
        if not text:
            if state == "table":
                state = "between"
            continue

        if state == "legend":
            entry = parse_legend_entry(text)
            if entry:
                sym, code = entry
                if sym:
                    legends[-1][sym] = code
                continue
            state = "between"
        if state == "between":
            if not FOOTNOTE_RE.match(text):
                heading = text.strip("\t ")
            continue

        # state == "table": one row of the results table.
        nr, rtitle, acell, status, expl = normalise_row(line, lineno, warn)

        if nr:
            m = re.fullmatch(r"(\d+)\.", nr)
            if not m:
                raise SystemExit(f"line {lineno}: unexpected result number {nr!r}")
            n = int(m.group(1))
            if res and n == res["number"]:
                # The result is repeated at the top of a continuation page.
                if not same_title(rtitle, res["title"]):
                    warn(f"line {lineno}: result {n} repeated with a different title: {rtitle!r}")
            else:
                if results and n != results[-1]["number"] + 1:
                    warn(f"line {lineno}: result {n} follows result {results[-1]['number']}")
                res = {"number": n, "title": clean_text(rtitle), "theme": heading,
                       "actionLine": al, "activities": []}
                results.append(res)
                al["results"].append(res)
                act = None
        elif rtitle:
            warn(f"line {lineno}: result title without number: {rtitle!r}")
        if res is None:
            raise SystemExit(f"line {lineno}: table row before any result")

        if acell:
            m = ACT_NUM_RE.match(acell)
            if m:
                # One cell can hold several numbered activities sharing a status and an
                # explanation (result 27: "1. In gesprek ... 2. Campagne ..."). Split only on
                # the next number in sequence followed by a capital, so "29 landen" or
                # "273f Sr." inside a title never splits.
                n, rest = int(m.group(1)), m.group(2) or ""
                parts = []
                while True:
                    nxt = re.search(r"\s%d\.\s+(?=[A-Z])" % (n + 1), rest)
                    if not nxt:
                        parts.append((n, rest))
                        break
                    parts.append((n, rest[: nxt.start()]))
                    n, rest = n + 1, rest[nxt.end():]
                if len(parts) > 1:
                    warn(f"line {lineno}: one cell holds activities "
                         f"{', '.join(str(p[0]) for p in parts)} of result {res['number']}; "
                         "each gets the shared status and explanation")
                for n, title in parts:
                    prev = res["activities"][-1].number if res["activities"] else 0
                    if n != prev + 1:
                        warn(f"line {lineno}: result {res['number']}: activity {n} follows {prev}")
                    act = Activity(res, n, title, lineno)
                    res["activities"].append(act)
                    add_status(act, status)
                    if expl:
                        act.paras.append(expl)
            elif status or expl:
                # An unnumbered activity (results 25 and 31 do not number all of theirs): it
                # gets the next number in sequence.
                n = res["activities"][-1].number + 1 if res["activities"] else 1
                act = Activity(res, n, acell, lineno, inferred=True)
                res["activities"].append(act)
                add_status(act, status)
                if expl:
                    act.paras.append(expl)
                warn(f"line {lineno}: result {res['number']}: unnumbered activity, numbered {n}: "
                     f"{acell[:60]!r}")
            else:
                # Text in the activity column with no status and no explanation (result 25,
                # after activity 3) is a remark, not an activity. Results have no description
                # field, so keep it as a paragraph of the activity it follows.
                if act is None:
                    raise SystemExit(f"line {lineno}: remark before any activity")
                act.paras.append(acell)
                warn(f"line {lineno}: remark {acell[:50]!r}... kept as a paragraph of "
                     f"activity {act.number} of result {res['number']}")
        elif status or expl:
            if act is None:
                raise SystemExit(f"line {lineno}: continuation row before any activity")
            if status:
                # A row of its own with its own symbol: a separately reported part of the same
                # activity (result 3 activity 1, result 31 activity 1).
                add_status(act, status)
                act.paras.append(expl)
            elif act.paras:
                # The explanation cell simply continued on the next row.
                act.paras[-1] += " " + expl
            else:
                act.paras.append(expl)

    if state != "end":
        warn("end marker not found; the document may be truncated")
    return action_lines, results, legends, footnotes


def resolve_symbol(raw, legend, lineno, warn):
    """One symbol -> status code, using the page's legend first (see DEFAULT_SYMBOLS)."""
    sym = norm_symbol(raw)
    if not sym:
        return None
    page = legend.get(sym)
    default = DEFAULT_SYMBOLS.get(sym)
    if page and default and page != default:
        warn(f"line {lineno}: symbol {sym} means {page} in its page legend but {default} elsewhere; "
             "using the page legend")
    if page and not default:
        warn(f"line {lineno}: symbol {sym} read as {page} from its page legend only")
    code = page or default
    if not code:
        raise SystemExit(f"line {lineno}: unknown status symbol {raw!r}")
    return code


def combine_status(a, legends, warn):
    """The activity's status, or None when the document does not say.

    Most activities have one symbol. Some report parts separately ("✓ / 📅", or extra rows with
    their own symbol). Then the activity as a whole is as far along as its least advanced part:
    if all parts agree that is the status; if the parts are 'completed' plus exactly one other
    state, the other state is the status (e.g. ✓ + 📅 -> on-track). If any part's symbol was lost
    ("✓ / " with nothing after the slash, or an empty cell), the status is omitted.
    """
    codes = []
    for raw, li in a.statuses:
        legend = legends[li] if li < len(legends) else {}
        parts = raw.split("/") if raw else [""]
        for p in parts:
            codes.append(resolve_symbol(p, legend, a.lineno, warn))
    if not codes or None in codes:
        if any(codes):
            warn(f"line {a.lineno}: result {a.result['number']} activity {a.number}: "
                 f"status {[r for r, _ in a.statuses]} partly lost; status omitted")
        return None
    distinct = list(dict.fromkeys(codes))
    if len(distinct) == 1:
        return distinct[0]
    others = [c for c in distinct if c != COMPLETED]
    if len(others) == 1:
        warn(f"line {a.lineno}: result {a.result['number']} activity {a.number}: "
             f"parts {codes} -> {others[0]}")
        return others[0]
    warn(f"line {a.lineno}: result {a.result['number']} activity {a.number}: "
         f"conflicting parts {codes}; status omitted")
    return None


def build_records(action_lines, legends, footnotes, warn):
    records = []
    for al in action_lines:
        al_id = f"al{al['number']}"
        records.append({"id": al_id, "kind": "action-line", "number": al["number"],
                        "title": al["title"], "owner": PROGRAMME_OWNER})
        for res in al["results"]:
            r_id = f"{al_id}.r{res['number']:02d}"
            records.append({"id": r_id, "kind": "result", "actionLine": al_id,
                            "number": res["number"], "title": res["title"],
                            "theme": res["theme"], "owner": PROGRAMME_OWNER})
            if not res["activities"]:
                warn(f"result {res['number']} has no activities")
            for a in res["activities"]:
                rec = {"id": f"{r_id}.a{a.number:02d}", "kind": "activity", "result": r_id,
                       "number": a.number}
                title = clean_text(a.title).rstrip(":").strip()
                if not title:
                    # Result 30 activity 2 is just "2." in the document.
                    title = "(geen titel in brondocument)"
                    warn(f"line {a.lineno}: result {res['number']} activity {a.number} "
                         f"has no title; placeholder used")
                rec["title"] = title
                status = combine_status(a, legends, warn)
                if status:
                    rec["status"] = status
                explanation = "\n".join(p for p in (clean_text(p) for p in a.paras) if p)
                # Footnote markers (result 5) point to notes printed under the page's legend;
                # append the note so the reference is not lost.
                for mark, note in footnotes.items():
                    if mark in explanation:
                        explanation += f"\n{mark} {note}"
                if explanation:
                    rec["explanation"] = explanation
                    owner = owner_of(explanation)
                    if owner:
                        rec["owner"] = owner
                    partners = [c for c in orgs_named(explanation) if c != owner]
                    if partners:
                        rec["partners"] = partners
                    links = [u.rstrip(".,;:)") for u in URL_RE.findall(explanation)]
                    if links:
                        rec["links"] = links
                records.append(rec)
    return records


def main(argv):
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        lines = f.read().replace("\r\n", "\n").split("\n")

    def warn(msg):
        print(f"note: {msg}", file=sys.stderr)

    action_lines, results, legends, footnotes = parse(lines, warn)
    records = build_records(action_lines, legends, footnotes, warn)
    doc = {"format": FORMAT, "source": SOURCE, "records": records}
    sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
