"""A static checker for Paheko Brindille modules (``paheko-recyclic module lint``).

It knows Brindille's tag grammar well enough to catch what breaks a module on a live Paheko,
where a template error can take down a page that is not even the module's own (the admin home
page runs ``snippets/home_button.html`` on every view):

- blocks: every ``{{#section}}`` closed by its ``{{/section}}``, ``{{if}}``/``{{elseif}}``/
  ``{{else}}``/``{{/if}}`` well nested, comments and ``{{literal}}`` blocks terminated;
- names: only functions, sections and modifiers that exist in Paheko 1.3 (lists below, taken
  from Paheko's Brindille reference and its ``UserTemplate`` classes), plus the module's own
  ``{{#define}}`` s;
- ``{{:api}}`` calls to an external server (with ``url=``): ``body=`` an array variable (a missing
  body or a JSON string kills the page with a PHP TypeError), ``fail=false`` and ``assign_code=``
  (4xx/5xx never raise; the code is the only way to know);
- no ``{{#load}}`` inside an open SQL loop (``{{#select}}``, ``{{#sql}}``…), nor an ``{{:include}}`` of a
  template that loads or saves: it locks the database;
- no ``{{:api}}`` reachable from a snippet (``snippets/*.html`` run inside Paheko's own pages: any error
  there, including the template error Paheko raises when it refuses the address, takes the page down
  for every member and prints the call's parameters, password included), nor from a page drawn for
  people (one with ``{{:admin_header}}``): calls belong to pages the browser loads in the background;
- every external ``{{:api}}`` inside an ``{{if}}`` testing the back-off (a condition naming ``next_try``
  or ``backoff``): an unreachable receiver costs 10 s per call;
- ``"… %d"|args:$x|intval`` (the cast applies to the whole formatted text), and ``{{if}}`` conditions with
  parentheses (Brindille does not compile them);
- ``sql_where`` applied to a dotted or quoted name (``"s.id"|sql_where:…``): Paheko quotes it as one
  identifier, which SQLite then reads as a string, and the condition is always true;
- no secret written in a template (literal password, token, credentials in a URL), nor printed
  (output of a password/secret/token variable or of ``$module.config``, ``{{:debug}}``, a password
  field filled from the configuration, a secret passed to a function that prints its parameters);
- ``{{:include}}`` of a relative file that does not exist;
- the module's technical name and ``module.ini`` (required keys, access restriction, booleans).

Findings print as ``file:line:col: CODE message``; codes starting with ``E`` are errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

MODULE_NAME_RE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
TEMPLATE_SUFFIXES = frozenset({".html", ".htm", ".tpl", ".skel", ".xml"})

# Brindille core + Paheko (Functions, CommonFunctions, module storage functions).
FUNCTIONS = frozenset({
    "assign", "break", "continue", "return", "exit", "yield", "redirect", "debug", "error", "http",
    "include", "read", "captcha", "mail", "api", "csv", "call", "signature", "admin_header",
    "admin_footer", "password_input", "form_errors", "input", "button", "link", "linkbutton",
    "linkmenu", "exportmenu", "icon", "tag", "dropdown", "delete_form", "user_field", "edit_user_field",
    "admin_files", "delete_file", "save", "delete", "table", "column",
})
# Brindille core + Paheko (Sections, compiled sections, module storage sections).
SECTIONS = frozenset({
    "foreach", "select", "sql", "form", "capture", "define", "call", "load", "list", "categories",
    "articles", "pages", "breadcrumbs", "images", "documents", "attachments", "users",
    "subscriptions", "transactions", "transaction_lines", "transaction_users", "accounts",
    "balances", "years", "projects", "restrict", "module", "extension", "files",
})
# Sections that iterate over an open SQL cursor: a {{#load}} inside one locks the database.
SQL_LOOPS = frozenset({
    "select", "sql", "load", "list", "categories", "articles", "pages", "images", "documents",
    "attachments", "users", "subscriptions", "transactions", "transaction_lines",
    "transaction_users", "accounts", "balances", "years", "files",
})
# Brindille core, PHP functions exposed as modifiers, Paheko Modifiers and CommonModifiers.
MODIFIERS = frozenset({
    "args", "cat", "concat", "count", "escape", "raw", "or", "map", "tolower", "toupper",
    "ucfirst", "ucwords", "lcfirst", "strftime", "date_format",
    "strtotime", "htmlentities", "htmlspecialchars", "trim", "ltrim", "rtrim", "md5", "sha1",
    "nl2br", "strlen", "strpos", "strrpos", "wordwrap", "boolval", "intval", "floatval", "strval",
    "substr", "http_build_query", "strip_tags",
    "replace", "regexp_replace", "regexp_match", "match", "truncate", "excerpt", "atom_date",
    "xml_escape", "cdata_escape", "entities_escape", "json_decode", "json_encode", "minify",
    "remove_leading_number", "get_leading_number", "extract_leading_number", "spell_out_number",
    "parse_date", "parse_datetime", "parse_time", "math", "money_int", "array_transpose",
    "check_siret_number", "check_email", "gettype", "arrayval", "explode", "implode", "flip",
    "key", "keys", "value", "values", "has", "has_key", "in", "key_in", "sort", "ksort",
    "reverse", "filter", "max", "min", "array_to_list", "quote_sql_identifier", "quote_sql",
    "sql_where", "sql_user_fields", "url_encode", "url_decode", "urlencode", "count_words",
    "version_compare", "uuid",
    "protect_contact", "markdown", "money", "money_raw", "money_currency", "money_html",
    "money_currency_html", "relative_date", "relative_date_short", "date_short", "date_long",
    "date_hour", "date", "size_in_bytes", "weight", "weightval", "typo", "css_hex_to_rgb",
    "css_hex_extract_hsv", "abs", "format_phone_number", "get_country_name", "str_getcsv",
})
SECRET_PARAMS = frozenset({"password", "passwd", "secret", "token", "api_key", "apikey"})
#: A variable path naming a secret: ``$module.config.password``, ``$api_password``…
_SECRET_VAR = re.compile(r"\$[\w.]*(?:password|passwd|secret|token|api_?key)\w*", re.I)
#: Functions that may take a secret without printing it (storage, variables, the call itself). Not
#: ``include``: Paheko's PHP error page (SHOW_ERRORS, its default) prints every include's parameters.
_SECRET_SINKS = frozenset({"assign", "save", "api", "return"})
#: Where a condition guards a call with the back-off.
_BACKOFF_WORDS = re.compile(r"next_try|backoff", re.I)

INI_REQUIRED = ("name", "restrict_section", "restrict_level")
INI_RECOMMENDED = ("description", "author", "doc_url")
INI_KNOWN = frozenset({
    *INI_REQUIRED, *INI_RECOMMENDED, "author_url", "home_button", "menu", "allow_user_restrict",
    "restrict_details", "version", "version_description", "license",
})
INI_BOOLEANS = ("home_button", "menu", "allow_user_restrict")
RESTRICT_SECTIONS = frozenset({"web", "documents", "users", "accounting", "connect", "config"})
RESTRICT_LEVELS = frozenset({"read", "write", "admin"})

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_TAG_START = re.compile(r"\{\{(?=\*|[:#/][A-Za-z_]|[$\"']|(?:if|elseif|else|literal)\b)")
STRING_RE = re.compile(r"\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'", re.S)
_PARAM = re.compile(
    r"(?P<name>[!:]?[A-Za-z_][\w.]*)\s*=\s*(?P<value>(?:\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|[^\s\"'])+)",
    re.S,
)
_MODIFIER = re.compile(r"(?<!\|)\|(?!\|)\s*(" + _NAME + ")")
_SQL_EXPR = re.compile(r"\{!?([^{}]*)\}")
_URL_CREDENTIALS = re.compile(r"https?://[^/\s:@\"']+:[^/\s@\"']+@")


@dataclass(frozen=True, order=True)
class Problem:
    """One finding, printed as ``file:line:col: CODE message``."""

    path: Path
    line: int
    col: int
    code: str
    message: str

    @property
    def is_error(self) -> bool:
        return self.code.startswith("E")

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.code} {self.message}"


@dataclass(frozen=True)
class Tag:
    """A Brindille tag: kind is function, section, close, if, elseif, else or output."""

    kind: str
    name: str
    body: str
    offset: int
    end: int


@dataclass
class _Source:
    path: Path
    text: str
    problems: list[Problem] = field(default_factory=list)

    def position(self, offset: int) -> tuple[int, int]:
        line = self.text.count("\n", 0, offset) + 1
        return line, offset - (self.text.rfind("\n", 0, offset) + 1) + 1

    def report(self, offset: int, code: str, message: str) -> None:
        line, col = self.position(offset)
        self.problems.append(Problem(self.path, line, col, code, message))


def _tag_end(text: str, start: int) -> int:
    """Offset just past the ``}}`` closing the tag opened at ``start``, quotes respected; -1 if none."""
    i = start + 2
    while i < len(text):
        char = text[i]
        if char in "\"'":
            match = STRING_RE.match(text, i)
            if not match:
                return -1
            i = match.end()
        elif text.startswith("}}", i):
            return i + 2
        else:
            i += 1
    return -1


def _classify(inner: str, offset: int, end: int) -> Tag:
    head = inner.lstrip()
    if head[0] in ":#/":
        match = re.match(_NAME, head[1:])
        name = match.group(0) if match else ""
        kind = {":": "function", "#": "section", "/": "close"}[head[0]]
        return Tag(kind, name, head[1 + len(name):], offset, end)
    word = re.match(r"(elseif|else|if)\b", head)
    if word:
        return Tag(word.group(1), word.group(1), head[len(word.group(1)):], offset, end)
    return Tag("output", "", head, offset, end)


def tokenize(text: str) -> list[Tag]:
    """The tags of a template's text, in order; comments and literal blocks are skipped."""
    return _tokenize(_Source(Path("-"), text))


def _tokenize(source: _Source) -> list[Tag]:
    text, tags, pos = source.text, [], 0
    while (match := _TAG_START.search(text, pos)) is not None:
        start = match.start()
        if text.startswith("{{*", start):
            close = text.find("*}}", start + 3)
            if close < 0:
                source.report(start, "E102", "comment {{* … is never closed by *}}")
                break
            pos = close + 3
            continue
        if re.match(r"\{\{literal\}\}", text[start:]):
            close = text.find("{{/literal}}", start)
            if close < 0:
                source.report(start, "E102", "{{literal}} block is never closed by {{/literal}}")
                break
            pos = close + len("{{/literal}}")
            continue
        end = _tag_end(text, start)
        if end < 0:
            source.report(start, "E102", "tag is never closed by }}")
            break
        tags.append(_classify(text[start + 2:end - 2], start, end))
        pos = end
    return tags


def split_select(body: str) -> tuple[str, str]:
    """``{{#select SQL ; params}}`` → (SQL, params); the first ``;`` outside strings splits."""
    i = 0
    while i < len(body):
        if body[i] in "\"'":
            match = STRING_RE.match(body, i)
            i = match.end() if match else len(body)
        elif body[i] == ";":
            return body[:i], body[i + 1:]
        else:
            i += 1
    return body, ""


def parse_params(text: str) -> dict[str, str]:
    """``name=value`` pairs of a tag (values kept as written, modifiers included)."""
    return {m.group("name"): m.group("value") for m in _PARAM.finditer(text)}


def _is_string_literal(value: str) -> bool:
    return bool(STRING_RE.fullmatch(value))


def _literal_text(value: str) -> str:
    return value[1:-1] if _is_string_literal(value) else value


def _modifiers(expression: str) -> list[str]:
    stripped = STRING_RE.sub('""', expression)
    names = _MODIFIER.findall(stripped)
    # map:NAME applies the modifier NAME: it is a modifier name, not a value.
    names += re.findall(r"\|\s*map\s*:\s*(" + _NAME + ")", stripped)
    return names


@dataclass(frozen=True)
class Vocabulary:
    """Names a template may use: Paheko's plus the module's own ``{{#define}}`` s."""

    functions: frozenset[str] = FUNCTIONS
    sections: frozenset[str] = SECTIONS
    modifiers: frozenset[str] = MODIFIERS

    def extended(self, tags: list[Tag]) -> Vocabulary:
        defined: dict[str, set[str]] = {"function": set(), "section": set(), "modifier": set()}
        for tag in tags:
            if tag.kind == "section" and tag.name == "define":
                for context, value in parse_params(tag.body).items():
                    if context in defined:
                        defined[context].add(_literal_text(value))
        return Vocabulary(
            self.functions | defined["function"],
            self.sections | defined["section"],
            self.modifiers | defined["modifier"],
        )


def _check_names(source: _Source, tag: Tag, words: Vocabulary) -> None:
    if tag.kind == "function" and tag.name not in words.functions:
        source.report(tag.offset, "E201", f"unknown function {{{{:{tag.name}}}}}")
    if tag.kind == "section" and tag.name not in words.sections:
        source.report(tag.offset, "E202", f"unknown section {{{{#{tag.name}}}}}")
    body = tag.body
    if tag.kind == "section" and tag.name == "select":
        sql, body = split_select(tag.body)
        body += " " + " ".join(_SQL_EXPR.findall(STRING_RE.sub("''", sql)))
    for name in _modifiers(body):
        if name not in words.modifiers:
            source.report(tag.offset, "E203", f"unknown modifier |{name}")


def _check_api(source: _Source, tag: Tag) -> None:
    params = parse_params(tag.body)
    if "url" not in params:
        return
    if "body" not in params:
        source.report(tag.offset, "E301", "external {{:api}} without body=: pass the payload as an array variable")
    elif _is_string_literal(params["body"]) or params["body"].endswith("|json_encode"):
        source.report(tag.offset, "E304", "external {{:api}} body= must be an array variable, not a string")
    if params.get("fail", "").lower() != "false":
        source.report(tag.offset, "E302", "external {{:api}} without fail=false: a transport failure breaks the page")
    if "assign_code" not in params:
        source.report(tag.offset, "E303", "external {{:api}} without assign_code=: 4xx/5xx answers never raise")


def _check_secrets(source: _Source, tag: Tag) -> None:
    for name, value in parse_params(tag.body).items():
        literal = _literal_text(value) if _is_string_literal(value) else ""
        if name.lower() in SECRET_PARAMS and literal.strip():
            source.report(tag.offset, "E501", f"secret written in the template ({name}=\"…\"): read it from $module.config")
        elif name.lower() == "user" and ":" in literal:
            source.report(tag.offset, "E501", "credentials written in the template (user=\"KEY:SECRET\")")
    if _URL_CREDENTIALS.search(tag.body):
        source.report(tag.offset, "E501", "credentials written in a URL (https://user:password@…)")


def _check_include(source: _Source, tag: Tag) -> None:
    value = parse_params(tag.body).get("file", "")
    if not _is_string_literal(value):
        return
    target = _literal_text(value)
    if not target or target.startswith("/") or "$" in target or "%" in target:
        return
    if not (source.path.parent / target).resolve().is_file():
        source.report(tag.offset, "E605", f"included file not found: {target}")


_SQL_WHERE_ON_LITERAL = re.compile(r"(\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*')\s*\|\s*sql_where\b")


def _check_sql_where(source: _Source, tag: Tag) -> None:
    for match in _SQL_WHERE_ON_LITERAL.finditer(tag.body):
        name = match.group(1)[1:-1]
        if re.search(r"[.\"'`\[\]]", name):
            source.report(
                tag.offset, "E320",
                f"sql_where on {match.group(1)}: Paheko quotes it as ONE identifier, which SQLite reads as a "
                "string when no column has that name, so the condition is always true; use a plain column "
                "name, or write the condition in the SQL",
            )


_ARGS_THEN_CAST = re.compile(
    r"(\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*')\s*\|\s*args(?:\s*:\s*(?:\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*'|[^|\s}:]+))+"
    r"\s*\|\s*(intval|floatval|boolval)\b")


def _check_modifier_order(source: _Source, tag: Tag) -> None:
    for match in _ARGS_THEN_CAST.finditer(tag.body):
        if not re.fullmatch(r"%[sd]", match.group(1)[1:-1]):
            source.report(
                tag.offset, "E321",
                f"|{match.group(2)} after |args applies to the whole formatted text {match.group(1)} (it became 0 "
                "and the module sent nothing): cast the argument in an {{:assign}} first",
            )


def _check_assign_var(source: _Source, tag: Tag) -> None:
    """``{{:assign var=…}}`` stores ``value=`` (or what ``from=`` names) only when it is the one other
    parameter; with more, Brindille stores them all, as an array, under ``var``."""
    if tag.kind != "function" or tag.name != "assign":
        return
    params = set(parse_params(tag.body)) - {"var", "append"}
    if "var" in parse_params(tag.body) and params & {"value", "from"} and len(params) > 1:
        source.report(
            tag.offset, "E322",
            f"{{{{:assign var=…}}}} with {', '.join(sorted(params))}: Brindille then stores every parameter as an "
            "array under var, not the value; assign the other variables in a separate {{:assign}}",
        )


def _check_condition(source: _Source, tag: Tag) -> None:
    if tag.kind in ("if", "elseif") and "(" in STRING_RE.sub('""', tag.body):
        source.report(tag.offset, "E104", f"{{{{{tag.kind}}}}} with parentheses: Brindille refuses to compile it; "
                                          "assign the parts to variables first")


def _check_printed_secrets(source: _Source, tag: Tag) -> None:
    if tag.kind == "output":
        expression = tag.body.strip()
        if _SECRET_VAR.search(expression) or re.match(r"\$module(\.config)?\s*(\||$)", expression):
            source.report(tag.offset, "E502", f"prints a secret ({{{{{expression}}}}}): never show it, even to admins")
        return
    if tag.kind != "function":
        return
    if tag.name == "debug":
        source.report(tag.offset, "E502", "{{:debug}} prints every variable, the module's configuration included")
        return
    params = parse_params(tag.body)
    if tag.name in ("input", "password_input"):
        field = _literal_text(params.get("name", ""))
        if re.search(r"password|passwd|secret|token", field, re.I) and {"source", "default", "value"} & set(params):
            source.report(tag.offset, "E502",
                          f"field {field!r} filled from a value: the saved secret would be printed in the page")
        return
    if tag.name in _SECRET_SINKS:
        return
    for name, value in params.items():
        if _SECRET_VAR.search(value) or re.fullmatch(r"\$module(\.config)?", value):
            source.report(tag.offset, "E502", f"{{{{:{tag.name}}}}} {name}= is given a secret: it prints it")


def check_template(path: Path, text: str, words: Vocabulary = Vocabulary()) -> list[Problem]:
    """Every finding in one template's text."""
    source = _Source(path, text)
    tags = _tokenize(source)
    words = words.extended(tags)
    stack: list[tuple[Tag, bool]] = []  # (opening tag, else already seen)
    conditions: list[str] = []  # per open block: its if/elseif conditions so far ("" for sections)
    for tag in tags:
        _check_names(source, tag, words)
        _check_secrets(source, tag)
        _check_printed_secrets(source, tag)
        _check_sql_where(source, tag)
        _check_modifier_order(source, tag)
        _check_assign_var(source, tag)
        _check_condition(source, tag)
        if tag.kind == "function" and tag.name == "api":
            _check_api(source, tag)
            if "url" in parse_params(tag.body) and not any(_BACKOFF_WORDS.search(c) for c in conditions):
                source.report(
                    tag.offset, "E330",
                    "external {{:api}} not guarded by the back-off: put it inside an {{if}} testing next_try "
                    "(an unreachable receiver costs 10 s per call, on every view)",
                )
        if tag.kind == "function" and tag.name == "include":
            _check_include(source, tag)
        if tag.kind in ("if", "elseif") and not tag.body.strip():
            source.report(tag.offset, "E103", f"{{{{{tag.kind}}}}} without a condition")
        if tag.kind == "section":
            if tag.name == "load" and any(open_.name in SQL_LOOPS for open_, _ in stack):
                outer = next(open_ for open_, _ in reversed(stack) if open_.name in SQL_LOOPS)
                line, _col = source.position(outer.offset)
                source.report(
                    tag.offset, "E401",
                    f"{{{{#load}}}} inside the {{{{#{outer.name}}}}} loop opened line {line}: "
                    "collect rows with assign= first, then loop with {{#foreach}}",
                )
            stack.append((tag, False))
            conditions.append("")
        elif tag.kind == "if":
            stack.append((tag, False))
            conditions.append(tag.body)
        elif tag.kind in ("elseif", "else"):
            if tag.kind == "elseif" and conditions:
                conditions[-1] += " " + tag.body
            if not stack:
                source.report(tag.offset, "E101", f"{{{{{tag.kind}}}}} outside any block")
            elif stack[-1][1]:
                source.report(tag.offset, "E101", f"{{{{{tag.kind}}}}} after {{{{else}}}} in the same block")
            elif tag.kind == "elseif" and stack[-1][0].kind != "if":
                source.report(tag.offset, "E101", f"{{{{elseif}}}} inside {{{{#{stack[-1][0].name}}}}}")
            elif tag.kind == "else":
                stack[-1] = (stack[-1][0], True)
        elif tag.kind == "close":
            if not stack:
                source.report(tag.offset, "E101", f"{{{{/{tag.name}}}}} closes nothing")
                continue
            opened = stack[-1][0]
            if tag.name != opened.name:
                line, _col = source.position(opened.offset)
                expected = "{{/if}}" if opened.kind == "if" else f"{{{{/{opened.name}}}}}"
                source.report(tag.offset, "E101", f"{{{{/{tag.name}}}}} where {expected} was expected (opened line {line})")
                if any(open_.name == tag.name for open_, _ in stack):
                    while stack and stack[-1][0].name != tag.name:
                        stack.pop()
                        conditions.pop()
                    stack.pop()
                    conditions.pop()
                continue
            stack.pop()
            conditions.pop()
    for opened, _ in stack:
        label = "{{if}}" if opened.kind == "if" else f"{{{{#{opened.name}}}}}"
        source.report(opened.offset, "E101", f"{label} is never closed")
    return source.problems


def read_ini(path: Path) -> tuple[dict[str, tuple[str, int]], list[Problem]]:
    """``module.ini`` as {key: (value, line)}, plus problems for unreadable lines."""
    values: dict[str, tuple[str, int]] = {}
    problems: list[Problem] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in ";#":
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(_NAME, key.strip()):
            problems.append(Problem(path, number, 1, "E604", f"unreadable line: {raw!r}"))
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = (value, number)
    return values, problems


def check_ini(root: Path, name: str | None = None) -> list[Problem]:
    """``module.ini``: required and recommended keys, access restriction, booleans."""
    path = root / "module.ini"
    if not path.is_file():
        return [Problem(path, 1, 1, "E604", "module.ini is missing")]
    values, problems = read_ini(path)

    def at(key: str) -> int:
        return values[key][1] if key in values else 1

    for key in INI_REQUIRED:
        if not values.get(key, ("", 0))[0]:
            why = " (without restrict_section and restrict_level the pages are public)" if key.startswith("restrict") else ""
            problems.append(Problem(path, 1, 1, "E602", f"required key {key} is missing{why}"))
    for key in INI_RECOMMENDED:
        if not values.get(key, ("", 0))[0]:
            problems.append(Problem(path, 1, 1, "W601", f"recommended key {key} is missing"))
    if "restrict_section" in values and values["restrict_section"][0] not in RESTRICT_SECTIONS:
        problems.append(Problem(path, at("restrict_section"), 1, "E603", f"restrict_section must be one of {', '.join(sorted(RESTRICT_SECTIONS))}"))
    if "restrict_level" in values and values["restrict_level"][0] not in RESTRICT_LEVELS:
        problems.append(Problem(path, at("restrict_level"), 1, "E603", f"restrict_level must be one of {', '.join(sorted(RESTRICT_LEVELS))}"))
    for key in INI_BOOLEANS:
        if key in values and values[key][0].lower() not in ("true", "false"):
            problems.append(Problem(path, at(key), 1, "E603", f"{key} must be true or false"))
    for key in ("doc_url", "author_url"):
        value = values.get(key, ("", 0))[0]
        in_app = re.fullmatch(r"!\.\./m/([a-z0-9_]+)/([\w.-]+\.html)", value) if key == "doc_url" else None
        if in_app:
            if in_app.group(1) != (name or root.name) or not (root / in_app.group(2)).is_file():
                problems.append(Problem(path, at(key), 1, "E603",
                                        f"doc_url names a page of this module that does not exist: {value}"))
        elif value and not re.match(r"https?://\S+$", value):
            problems.append(Problem(path, at(key), 1, "E603",
                                    f"{key} must be an http(s) address (or !../m/NAME/page.html for doc_url)"))
    for key in values:
        if key not in INI_KNOWN:
            problems.append(Problem(path, at(key), 1, "W602", f"unknown key {key}"))
    if values.get("home_button", ("", 0))[0].lower() == "true" and (root / "snippets" / "home_button.html").is_file():
        problems.append(Problem(path, at("home_button"), 1, "W603", "home_button=true: snippets/home_button.html will never run"))
    return problems


def template_files(root: Path) -> list[Path]:
    """The module's Brindille templates, hidden files excluded, in a stable order."""
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix in TEMPLATE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def check_module(root: Path, name: str | None = None) -> list[Problem]:
    """Every finding for the module folder ``root`` (technical name: ``name`` or the folder's)."""
    name = name or root.name
    problems: list[Problem] = []
    if not MODULE_NAME_RE.match(name):
        problems.append(Problem(root, 1, 1, "E601", f"module name {name!r} must match {MODULE_NAME_RE.pattern}"))
    problems += check_ini(root, name)
    files = template_files(root)
    texts = {path: path.read_text(encoding="utf-8") for path in files}
    words = Vocabulary()
    for path, text in texts.items():
        words = words.extended(tokenize(text))
    for path, text in texts.items():
        problems += check_template(path, text, words)
    problems += check_reach(root, texts)
    return sorted(problems)


def _include_target(path: Path, tag: Tag) -> Path | None | str:
    """The file an ``{{:include}}`` names (resolved), ``"dynamic"`` when not a literal, None if absent."""
    value = parse_params(tag.body).get("file", "")
    target = _literal_text(value) if _is_string_literal(value) else ""
    if not target or "$" in target or "%" in target:
        return "dynamic"
    resolved = (path.parent / target).resolve()
    return resolved if resolved.is_file() else None


def check_reach(root: Path, texts: dict[Path, str]) -> list[Problem]:
    """Rules across ``{{:include}}``: what a snippet, a page drawn for people or an SQL loop reaches."""
    tags = {path.resolve(): (path, tokenize(text)) for path, text in texts.items()}
    problems: list[Problem] = []

    def reach(start: Path) -> dict[Path, list[Path]]:
        """Every template reachable from ``start`` with the include chain that leads to it."""
        seen, todo = {start: [start]}, [start]
        while todo:
            current = todo.pop()
            for tag in tags.get(current, (None, []))[1]:
                if tag.kind == "function" and tag.name == "include":
                    target = _include_target(tags[current][0], tag)
                    if isinstance(target, Path) and target not in seen:
                        seen[target] = seen[current] + [target]
                        todo.append(target)
        return seen

    def has(path: Path, kind: str, names: tuple[str, ...]) -> bool:
        return any(t.kind == kind and t.name in names for t in tags.get(path, (None, []))[1])

    def chain(paths: list[Path]) -> str:
        return " → ".join(p.relative_to(root.resolve()).as_posix() for p in paths)

    for resolved, (path, template_tags) in tags.items():
        source = _Source(path, texts[path])
        relative = resolved.relative_to(root.resolve()).as_posix()
        is_snippet = relative.startswith("snippets/")
        is_page = any(t.kind == "function" and t.name == "admin_header" for t in template_tags)
        if is_snippet or is_page:
            where = "a snippet runs inside Paheko's own pages" if is_snippet else "this page is drawn for people"
            for target, path_to in reach(resolved).items():
                if has(target, "function", ("api",)):
                    source.report(0, "E310", f"{{{{:api}}}} reachable ({chain(path_to)}): {where}, and a refused "
                                  "address or a hang breaks it (and prints the call's password): call the receiver "
                                  "from a page the browser loads in the background")
            if is_snippet:
                for tag in template_tags:
                    if tag.kind == "function" and tag.name == "include" and _include_target(path, tag) == "dynamic":
                        source.report(tag.offset, "E311", "dynamic {{:include}} in a snippet: what it runs cannot "
                                      "be checked (write the file name)")
        # {{:include}} of a template that loads or saves, inside an open SQL loop.
        open_sections: list[str] = []
        for tag in template_tags:
            if tag.kind == "section":
                open_sections.append(tag.name)
            elif tag.kind == "close" and tag.name in open_sections:
                while open_sections and open_sections.pop() != tag.name:
                    pass
            elif tag.kind == "function" and tag.name == "include" and any(n in SQL_LOOPS for n in open_sections):
                target = _include_target(path, tag)
                if not isinstance(target, Path):
                    continue
                for reached, path_to in reach(target).items():
                    if has(reached, "section", ("load",)) or has(reached, "function", ("save",)):
                        source.report(tag.offset, "E402", f"{{{{:include}}}} inside an SQL loop reaches "
                                      f"{chain(path_to)}, which loads or saves: the database locks; collect rows "
                                      "with assign= first, then loop with {{#foreach}}")
                        break
        problems += source.problems
    return problems


def check_path(path: Path, name: str | None = None) -> list[Problem]:
    """Lint a template file, a module folder, or a folder of module folders."""
    if path.is_file():
        return check_template(path, path.read_text(encoding="utf-8"))
    if (path / "module.ini").is_file():
        return check_module(path, name)
    modules = sorted(p.parent for p in path.glob("*/module.ini"))
    if not modules:
        return [Problem(path, 1, 1, "E604", "no module.ini here nor in any sub-folder")]
    return [problem for module in modules for problem in check_module(module)]
