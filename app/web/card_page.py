"""The model card as a page for people: the version's ``README.md`` rendered to HTML, its YAML
front matter as a small table, its figures and JSON card loaded from the version's folder.

Only files the card itself links to, sitting in the version's folder, are ever served
(``card_files``): the client names one of those, never a path. Links that leave the folder (to
the repository that trained the model) are shown as text, and images it does not hold by their
alt text: the server does not have them. The page allows no script and loads nothing from
elsewhere (``CONTENT_SECURITY_POLICY``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import yaml
from markdown_it import MarkdownIt

FILES_PREFIX = "files/"  # relative to /model/card: /model/files/NAME
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


@dataclass(frozen=True)
class Card:
    text: str  # the whole card, front matter included
    front_matter: dict
    body: str  # Markdown, after the front matter
    files: dict[str, Path]  # the version-folder files the card links to, by name


def _split_front_matter(text: str) -> tuple[dict, str]:
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end != -1:
            try:
                meta = yaml.safe_load(text[4:end]) or {}
            except yaml.YAMLError:
                meta = {}
            return (meta if isinstance(meta, dict) else {}), text[end + 5 :]
    return {}, text


def _local_name(target: str) -> str | None:
    """``target`` when it names a file in the card's own folder (no scheme, no folder, no
    query), else None."""
    if not target or "/" in target or "\\" in target or ":" in target or target[0] in "#?.":
        return None
    return target


# What a card's files may be: its figures and its JSON card (never a page or a script that
# would run in this server's origin).
SERVED_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif")
JSON_CARD = "model_card.json"


def _servable(folder: Path, name: str) -> bool:
    """``name`` is a regular file of ``folder`` itself (a symlink may not lead out of it), of a
    kind the card page shows."""
    if not (name == JSON_CARD or name.lower().endswith(SERVED_SUFFIXES)):
        return False
    path = folder / name
    try:
        inside = path.resolve(strict=True).parent == folder.resolve(strict=True)
    except OSError:
        return False
    return inside and path.is_file()


def read_card(text: str, folder: Path) -> Card:
    """The card's parts, and which of the files it links to can be served from ``folder``."""
    text = text.replace("\r\n", "\n")
    meta, body = _split_front_matter(text)
    files: dict[str, Path] = {}
    for token in _walk(_markdown.parse(body)):
        target = token.attrGet("href") or token.attrGet("src")
        name = _local_name(str(target)) if target else None
        if name is not None and _servable(folder, name):
            files[name] = folder / name
    return Card(text, meta, body, files)


def _walk(tokens):
    for token in tokens:
        yield token
        if token.children:
            yield from _walk(token.children)


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _front_matter_table(meta: dict) -> str:
    rows = []
    for key in ("license", "library_name", "pipeline_tag", "datasets", "tags"):
        value = meta.get(key)
        if value:
            shown = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            rows.append((key.replace("_", " "), shown))
    for entry in _list(meta.get("model-index")):
        for result in _list(entry.get("results") if isinstance(entry, dict) else None):
            for metric in _list(result.get("metrics") if isinstance(result, dict) else None):
                if isinstance(metric, dict) and "value" in metric:
                    rows.append((str(metric.get("name", metric.get("type"))), str(metric["value"])))
    if not rows:
        return ""
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="meta" aria-label="card metadata">{cells}</table>'


def render(card: Card, title: str) -> str:
    """The page: the card's Markdown as HTML (raw HTML in it escaped), links to the card's own
    files pointed at ``files/NAME``, links out of the folder shown as text."""
    tokens = _markdown.parse(card.body)
    for token in _walk(tokens):
        for attr in ("href", "src"):
            target = token.attrGet(attr)
            if target is None:
                continue
            target = str(target)
            if target in card.files:
                token.attrSet(attr, FILES_PREFIX + target)
            elif attr == "src":  # an image this server does not have: its alt text stays
                del token.attrs["src"]
            elif not target.startswith(("http://", "https://", "#")):
                del token.attrs["href"]  # a file of the repository, not of this server
                token.attrSet("title", f"{target} (in the repository that trained the model)")
    body = _markdown.renderer.render(tokens, _markdown.options, {})
    return PAGE.format(
        title=html.escape(title), meta=_front_matter_table(card.front_matter), body=body
    )


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="../favicon.ico">
<style>
  body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 76rem; margin: 1.5rem auto;
         padding: 0 1rem; color: #1d1d1f; }}
  nav {{ font-size: .9rem; margin-bottom: 1rem; }}
  table {{ border-collapse: collapse; margin: 1rem 0; font-size: .92rem; }}
  th, td {{ border: 1px solid #ddd; padding: .3rem .6rem; text-align: left; vertical-align: top; }}
  table.meta th {{ background: #f5f5f7; font-weight: 600; white-space: nowrap; }}
  pre {{ background: #f5f5f7; padding: .8rem; overflow-x: auto; border-radius: 6px; }}
  code {{ font-size: .88em; }}
  img {{ max-width: 100%; height: auto; }}
  .layout {{ display: grid; grid-template-columns: minmax(0, 1fr) 17rem; gap: 2rem; }}
  aside table.meta {{ position: sticky; top: 1rem; }}
  @media (max-width: 50rem) {{ .layout {{ grid-template-columns: 1fr; }} aside {{ order: -1; }} }}
</style>
</head>
<body>
<nav><a href="../">← try the model</a> · <a href="../docs">API docs</a> ·
<a href="card?format=markdown">Markdown</a> · <a href="../model">JSON</a></nav>
<div class="layout">
<main>
{body}
</main>
<aside>{meta}</aside>
</div>
</body>
</html>
"""
