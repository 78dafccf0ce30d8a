"""Settings: every setting of the schema, grouped as in the manual, edited and saved in place.

Saving goes through ``change_setting`` (validate, apply now, rewrite the TOML
file keeping its comments); a bad value is shown under its field with what is
allowed, and nothing else in the form is lost.
"""

from __future__ import annotations

from typing import Any

from mailengine.config import kinds
from mailengine.config.kinds import toml_literal
from mailengine.config.loader import ConfigError
from mailengine.config.model import Config
from mailengine.config.persist import raw_from_text, tables_as_text, tables_from_text
from mailengine.config.schema import BY_NAME, MANUAL_GROUPS, SETTINGS, Setting
from mailengine.web.admin import Routes, WebAdmin, is_secret
from mailengine.web.auth import client_address, identity_of
from mailengine.web.dkimkeys import all_keys, keys_in_use
from mailengine.web.login import arg
from mailengine.web.render import Html, csrf_field, el

RESTART = "applies after restart"


def slug(group: str) -> str:
    return "group-" + "".join(c if c.isalnum() else "-" for c in group.lower())


def is_numeric_list(setting: Setting) -> bool:
    d = setting.default
    return isinstance(d, list) and bool(d) and all(isinstance(v, int | float) for v in d)


def field_text(setting: Setting, raw: Any) -> str:
    """A setting's value as its form field shows it: lists one per line, numbers as typed,
    arrays of tables as their ``[[section.key]]`` blocks."""
    if isinstance(setting.kind, kinds.TableList):
        return tables_as_text(setting.section, setting.key, raw)
    if isinstance(raw, list | tuple):
        if is_numeric_list(setting):
            return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in raw)
        return "\n".join(str(v) for v in raw)
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


def same_raw(a: Any, b: Any) -> bool:
    def norm(v: Any) -> Any:
        return list(v) if isinstance(v, list | tuple) else v

    return bool(norm(a) == norm(b))


def default_text(setting: Setting) -> str:
    d = setting.default
    if d == "" or d == []:
        return "blank" if d == "" else "empty list"
    return toml_literal(d)


def short_problem(config: Config, exc: ConfigError) -> str:
    """The loader's line without the file name: ``[web] port = 0: must be ...``."""
    text = "; ".join(exc.problems)
    prefix = f"{config.path}: "
    return text.replace(prefix, "")


def lockout_problem(setting: Setting, raw: Any, address: str) -> str:
    """Refuse an allowed_ips list that would shut out the operator making the change."""
    if (setting.section, setting.key) != ("web", "allowed_ips"):
        return ""
    try:
        ranges = setting.kind.parse(raw)
    except kinds.Invalid:
        return ""  # the normal validation reports it
    if ranges.has_zero or (ranges.entries and address not in ranges):
        return (
            f"this would lock you out: your address {address} is not in the new list "
            "(to turn the web admin off, edit the file and restart)"
        )
    return ""


def secret_input(setting: Setting, is_set: bool, common: dict[str, Any]) -> Html:
    """A secret is never sent to the browser: blank keeps it, a checkbox removes it."""
    return el(
        "div",
        el(
            "input",
            type="password",
            value="",
            size="40",
            autocomplete="new-password",
            placeholder="set: type a new one to replace it" if is_set else "not set",
            **common,
        ),
        el(
            "label",
            el("input", type="checkbox", name=f"{setting.name}.remove", value="true"),
            " remove it",
            class_="switch",
        )
        if is_set
        else None,
    )


def input_for(setting: Setting, text: str, error: str, config: Config) -> Html:
    name = setting.name
    common = {"name": name, "id": name, "aria_invalid": "true" if error else None}
    if is_secret(setting.section, setting.key):
        return secret_input(setting, bool(config.raw(setting.section, setting.key)), common)
    if isinstance(setting.default, bool):
        return el(
            "label",
            el("input", type="checkbox", value="true", checked=text == "true", **common),
            " on",
            class_="switch",
        )
    if isinstance(setting.kind, kinds.Choice):
        options = [
            el("option", choice or "(none)", value=choice, selected=choice == text)
            for choice in setting.kind.choices
        ]
        return el("select", options, **common)
    if isinstance(setting.default, list) and not is_numeric_list(setting):
        is_tables = isinstance(setting.kind, kinds.TableList)
        rows = max(2, min(24 if is_tables else 12, text.count("\n") + 2))
        example = ""
        if isinstance(setting.kind, kinds.TableList):
            example = tables_as_text(setting.section, setting.key, [setting.kind.example()])
        return el(
            "textarea",
            text,
            rows=str(rows),
            cols="60" if is_tables else None,
            spellcheck="false",
            placeholder=example or "one per line",
            **common,
        )
    if isinstance(setting.default, int):
        return el("input", value=text, inputmode="numeric", size="12", **common)
    return el("input", value=text, size="40", spellcheck="false", **common)


def setting_row(setting: Setting, text: str, error: str, config: Config) -> Html:
    return el(
        "div",
        el(
            "div",
            el("label", setting.key, for_=setting.name, class_="key"),
            el("div", f"[{setting.section}]", class_="section muted small"),
            el("span", RESTART, class_="pill") if not setting.live else None,
            class_="setting-name",
        ),
        el(
            "div",
            input_for(setting, text, error, config),
            el("div", error, class_="error", role="alert") if error else None,
            class_="setting-value",
        ),
        el(
            "div",
            el("p", setting.help),
            el(
                "p",
                el("b", "Default: "),
                default_text(setting),
                " · ",
                el("b", "Allowed: "),
                setting.kind.allowed(),
                class_="muted small",
            ),
            class_="setting-help",
        ),
        class_="setting" + (" invalid" if error else ""),
        id=f"row-{setting.name}",
    )


def group_form(
    group: str,
    config: Config,
    csrf: str,
    errors: dict[str, str],
    submitted: dict[str, str],
    extra: Html | None = None,
) -> Html:
    members = [s for s in SETTINGS if s.group == group]
    rows = [
        setting_row(
            s,
            submitted.get(s.name, field_text(s, config.raw(s.section, s.key))),
            errors.get(s.name, ""),
            config,
        )
        for s in members
    ]
    return el(
        "form",
        el("h2", group),
        csrf_field(csrf),
        el("input", type="hidden", name="group", value=group),
        el("input", type="hidden", name="fields", value=",".join(s.name for s in members)),
        rows,
        extra,
        el("div", el("button", f"Save {group}", type="submit", class_="primary"), class_="actions"),
        method="post",
        action=f"/gui/admin/settings#{slug(group)}",
        class_="card settings",
        id=slug(group),
    )


def settings_body(
    admin: WebAdmin, csrf: str, errors: dict[str, str], submitted: dict[str, str]
) -> Html:
    config = admin.engine.config
    side = el("nav", [el("a", g, href=f"#{slug(g)}") for g in MANUAL_GROUPS], class_="toc")
    extras = {"DKIM": keys_in_use(all_keys(admin))}
    return el(
        "div",
        el("h1", "Settings"),
        el(
            "p",
            "Saved to ",
            el("code", config.path),
            " (comments and layout kept). Changes apply at once unless marked “",
            RESTART,
            "”.",
            class_="muted",
        ),
        el(
            "div",
            side,
            el(
                "div",
                [
                    group_form(g, config, csrf, errors, submitted, extras.get(g))
                    for g in MANUAL_GROUPS
                ],
            ),
            class_="with-toc",
        ),
    )


def save_form(
    admin: WebAdmin, request: Any
) -> tuple[list[Setting], dict[str, str], dict[str, str]]:
    """Apply every changed field; returns (saved, errors by name, submitted texts)."""
    config = admin.engine.config
    names = [n for n in arg(request, "fields").split(",") if n]
    saved: list[Setting] = []
    raw: Any
    errors: dict[str, str] = {}
    submitted: dict[str, str] = {}
    for name in names:
        section, _, key = name.partition(".")
        setting = BY_NAME.get((section, key))
        if setting is None:
            continue
        if is_secret(section, key):
            # Blank keeps the secret (the form never holds it); "remove it" clears it.
            raw = "" if arg(request, f"{name}.remove") == "true" else arg(request, name).strip()
            if not raw and arg(request, f"{name}.remove") != "true":
                continue
        elif isinstance(setting.default, bool):
            raw = arg(request, name) == "true"
            submitted[name] = "true" if raw else "false"
        elif isinstance(setting.kind, kinds.TableList):
            submitted[name] = arg(request, name)
            raw = tables_from_text(section, key, submitted[name])
        else:
            submitted[name] = arg(request, name)
            raw = raw_from_text(setting.default, submitted[name])
        if same_raw(raw, config.raw(section, key)):
            continue
        problem = lockout_problem(setting, raw, client_address(request))
        if problem:
            errors[name] = problem
            continue
        try:
            admin.change(request, section, key, raw)
        except ConfigError as exc:
            errors[name] = short_problem(config, exc)
        except OSError as exc:
            errors[name] = f"could not write {config.path}: {exc.strerror}"
        else:
            saved.append(setting)
    return saved, errors, submitted


def add_routes(app: Routes, admin: WebAdmin) -> None:
    @app.route("/gui/admin/settings", methods=["GET"])
    def show(request: Any) -> bytes:
        body = settings_body(admin, identity_of(request).csrf, {}, {})
        return admin.page(request, "Settings", body, active="settings")

    @app.route("/gui/admin/settings", methods=["POST"])
    def save(request: Any) -> bytes:
        saved, errors, submitted = save_form(admin, request)
        group = arg(request, "group")
        if errors:
            body = settings_body(admin, identity_of(request).csrf, errors, submitted)
            return admin.page(request, "Settings", body, active="settings", code=400)
        if saved:
            later = [s.name for s in saved if not s.live]
            message = "Saved " + ", ".join(s.name for s in saved) + "."
            if later:
                message += f" {', '.join(later)}: {RESTART}."
        else:
            message = "Nothing changed."
        admin.flash(request, message)
        return admin.redirect(request, f"/gui/admin/settings#{slug(group)}")
