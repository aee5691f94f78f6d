"""The documents the procedure requires, rendered in Chinese from templates a province can
override per jurisdiction, and their PDFs.

Templates are looked up, for a case in division 330106, in `<root>/330106/`, `<root>/330100/`,
`<root>/330000/`, then `<root>/default/`, for each root in order (a province's own directory,
`NOTIFY_TEMPLATES_DIR`, before the built-in `services/notify/templates`). Each kind has
`<kind>.html` (the document) and `<kind>.txt` (the short text an SMS carries). HTML is
autoescaped. The PDF is made from the stored HTML (so an overridden template shapes the PDF
too) with reportlab's built-in CID font STSong-Light: Chinese renders without font files.
"""
from __future__ import annotations

import functools
import hashlib
import io
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import jinja2

from petitions.domain.values import local_date
from services.notify.config import KINDS

BUILTIN_TEMPLATES = Path(__file__).resolve().parent / "templates"
DOCUMENT_NAMESPACE = uuid.UUID("5b0c1f0e-2a7c-4c53-9a55-0f6b8c1d2e3f")

CATEGORY_LABELS = {"suggestion": "建议意见类", "accusation": "检举控告类", "appeal": "申诉求决类"}
CHANNEL_LABELS = {"letter": "来信", "visit": "来访", "phone": "来电", "online": "网上信访",
                  "transferred": "上级转送交办"}
CLOCK_LABELS = {"acceptance": "受理告知（15日）", "handling": "办理（60日）",
                "extension": "延期办理", "review": "复查（30日）", "re_review": "复核（30日）",
                "review_request": "申请复查期限", "re_review_request": "申请复核期限",
                "improvement": "改进建议回复（30日）", "objection": "异议（5个工作日）"}
NOT_ACCEPTED_REASONS = {
    "outside_remit": "该事项不属于本机关职权范围",
    "not_our_remit": "该事项不属于本机关职权范围",
    "litigation": "该事项已经或者依法应当通过诉讼途径解决",
    "arbitration": "该事项已经或者依法应当通过仲裁途径解决",
    "administrative_review": "该事项已经或者依法应当通过行政复议途径解决",
    "statutory_channel": "该事项已经或者依法应当通过诉讼、仲裁、行政复议等法定途径解决",
    "criminal_case": "该事项属于已经立案的刑事或者治安案件",
    "public_security_case": "该事项属于已经立案的刑事或者治安案件",
    "no_clear_subject": "信访事项没有明确的诉求或者事实",
    "no_clear_facts": "信访事项没有明确的诉求或者事实",
    "no_clear_subject_or_facts": "信访事项没有明确的诉求或者事实",
    "litigation_arbitration_review":
        "该事项已经或者依法应当通过诉讼、仲裁、行政复议等法定途径解决",
    "criminal_case_filed": "该事项属于已经立案的刑事或者治安案件",
}
NOT_ACCEPTED_AGAIN_GROUNDS = {
    "already_accepted": "该信访事项已经受理或者正在办理",
    "being_handled": "该信访事项已经受理或者正在办理",
    "raised_higher_during_handling": "该信访事项正在办理期间又向上级机关提出",
    "terminated": "该信访事项已经复查、复核终结",
    "review_exhausted": "该信访事项已经复查、复核终结",
    "same_matter_open": "该信访事项已经受理或者正在办理",
    "terminated_after_re_review": "该信访事项已经复查、复核终结",
}
PROPOSED_ACTIONS = {"public_criticism": "通报批评", "leader_attention": "提请领导关注",
                    "leader_reception": "领导接访"}
OUTCOME_LABELS = {"adopted": "建议予以采纳", "supported": "诉求予以支持",
                  "partly_supported": "诉求部分予以支持", "explained": "已作解释说明",
                  "not_supported": "诉求不予支持",
                  "explained_not_supported": "已作解释说明，诉求不予支持"}


def cn_date(value: Any) -> str:
    """2026-09-28 (or a timestamp) -> 2026年9月28日 (China's calendar day)."""
    if not value:
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        d = local_date(value) if value.tzinfo else value.date()
    else:
        d = value
    return f"{d.year}年{d.month}月{d.day}日"


def document_id(event_id: str, kind: str, recipient: str) -> uuid.UUID:
    """Stable: the same event, kind and recipient always make the same document."""
    return uuid.uuid5(DOCUMENT_NAMESPACE, f"{event_id}|{kind}|{recipient}")


@dataclass(frozen=True)
class Rendered:
    id: uuid.UUID
    event_id: str
    division: str
    kind: str
    recipient: str
    party: str
    title: str
    html: str
    text: str
    template: str
    data: dict[str, Any]
    for_petitioner: bool
    digest: str = field(default="")

    @staticmethod
    def digest_of(html: str) -> str:
        return "sha256:" + hashlib.sha256(html.encode()).hexdigest()


# What `{{ x.items() }}` and the like need from a dict: these names keep Jinja's own lookup.
_DICT_METHODS = frozenset(dir(dict))


class _Environment(jinja2.Environment):
    """Looks `x.name` up as a key first when `x` is a plain dict, as our contexts are: Jinja
    tries the attribute first, and the AttributeError it catches for every field of every
    document was a measurable part of rendering. Same result for every key that is not the
    name of a dict method (those keep Jinja's order)."""

    def make_globals(self, d: Any = None) -> Any:  # type: ignore[override]
        """A template's globals as one plain dict, not Jinja's ChainMap over ours: every
        render copies them into a new context (three contexts per document, with its base
        and its include), and iterating a ChainMap made that copy a measurable part of
        rendering. Our globals are fixed before any template is loaded."""
        return {**self.globals, **(d or {})}

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_METHODS:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


class Renderer:
    def __init__(self, override_root: Path | None = None) -> None:
        self.roots = [r for r in (override_root, BUILTIN_TEMPLATES) if r is not None]
        self._envs: dict[str, jinja2.Environment] = {}
        # (division, kind) -> (html template, text template, label): looked up once, as
        # templates are read once per process anyway (auto_reload is off)
        self._templates: dict[tuple[str, str], tuple[jinja2.Template, jinja2.Template, str]] = {}

    def environment(self, division: str) -> jinja2.Environment:
        env = self._envs.get(division)
        if env is None:
            chain = [division, division[:4] + "00", division[:2] + "0000", "default"]
            seen: list[str] = []
            for root in self.roots:
                for code in chain:
                    path = root / code
                    if path.is_dir() and str(path) not in seen:
                        seen.append(str(path))
            env = _Environment(
                loader=jinja2.FileSystemLoader(seen),
                autoescape=jinja2.select_autoescape(enabled_extensions=("html",),
                                                    default_for_string=True, default=False),
                trim_blocks=True, lstrip_blocks=True,
                auto_reload=False,  # templates are read once per process
                # a plain dict for the loaded templates instead of the default lock-guarded
                # LRU: every render looks its base and include up again, and the set of
                # templates is small and fixed
                cache_size=-1,
            )
            env.filters["cn_date"] = cn_date
            self._envs[division] = env
        return env

    def render(self, kind: str, division: str, context: dict[str, Any]) -> tuple[str, str, str]:
        """(html, short text, template file used) for one document."""
        found = self._templates.get((division, kind))
        if found is None:
            env = self.environment(division)
            html_template = env.get_template(f"{kind}.html")
            found = (html_template, env.get_template(f"{kind}.txt"),
                     _template_label(html_template.filename or kind, tuple(self.roots)))
            self._templates[(division, kind)] = found
        html_template, text_template, label = found
        return html_template.render(context), text_template.render(context).strip(), label


@functools.lru_cache(maxsize=1024)
def _template_label(filename: str, roots: tuple[Path, ...]) -> str:
    """The template's path below its root; cached, as the same few files serve every render."""
    path = Path(filename)
    for root in roots:
        try:
            return str(path.relative_to(root))
        except ValueError:
            continue
    return path.name


def title_of(kind: str) -> str:
    return KINDS[kind]


# ---------------------------------------------------------------------------------- PDF

_FONT = "STSong-Light"
_font_registered = False


def _register_font() -> None:
    global _font_registered
    if not _font_registered:
        from reportlab.pdfbase import pdfmetrics
        from reportlab.pdfbase.cidfonts import UnicodeCIDFont

        pdfmetrics.registerFont(UnicodeCIDFont(_FONT))
        _font_registered = True


class _Blocks(HTMLParser):
    """Our documents' HTML as a list of blocks: (style, text) and tables."""

    BLOCK = {"h1": "title", "h2": "heading", "h3": "heading", "p": "body", "li": "bullet",
             "dt": "label", "dd": "body", "address": "sign"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[tuple[str, Any]] = []
        self._style: str | None = None
        self._buf: list[str] = []
        self._table: list[list[str]] | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._skip = 0
        self._class_stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        cls = dict(attrs).get("class") or ""
        if tag in ("style", "script", "head", "title"):
            self._skip += 1
        elif tag == "table":
            self._flush()
            self._table = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "br":
            self._text("<br/>", raw=True)
        elif tag in ("b", "strong"):
            self._text("<b>", raw=True)
        elif tag in self.BLOCK or (tag == "div" and cls):
            self._flush()
            self._style = "sign" if "sign" in cls or "right" in cls else self.BLOCK.get(tag, "body")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "script", "head", "title"):
            self._skip = max(0, self._skip - 1)
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table" and self._table is not None:
            self.blocks.append(("table", self._table))
            self._table = None
        elif tag in ("b", "strong"):
            self._text("</b>", raw=True)
        elif tag in self.BLOCK or tag == "div":
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._text(escape(" ".join(data.split())) if data.strip() else "")

    def _text(self, text: str, raw: bool = False) -> None:
        if self._cell is not None:
            self._cell.append(text)
        elif self._style is not None or raw or text:
            self._buf.append(text)

    def _flush(self) -> None:
        text = "".join(self._buf).strip()
        if text and text not in ("<b></b>",):
            self.blocks.append((self._style or "body", text))
        self._buf = []
        self._style = None

    def close(self) -> None:
        super().close()
        self._flush()


def html_to_pdf(html: str, title: str = "") -> bytes:
    """A4 PDF of one of our documents, Chinese set in STSong-Light."""
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_CENTER, TA_RIGHT
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    _register_font()
    parser = _Blocks()
    parser.feed(html)
    parser.close()
    base = ParagraphStyle("body", fontName=_FONT, fontSize=11.5, leading=19, wordWrap="CJK",
                          firstLineIndent=0, spaceAfter=4)
    styles = {
        "title": ParagraphStyle("title", parent=base, fontSize=20, leading=28,
                                alignment=TA_CENTER, spaceAfter=10),
        "heading": ParagraphStyle("heading", parent=base, fontSize=13, leading=21,
                                  spaceBefore=6),
        "body": base,
        "label": ParagraphStyle("label", parent=base, textColor=colors.HexColor("#444444")),
        "bullet": ParagraphStyle("bullet", parent=base, leftIndent=12, bulletIndent=2),
        "sign": ParagraphStyle("sign", parent=base, alignment=TA_RIGHT),
    }
    cell = ParagraphStyle("cell", parent=base, fontSize=10.5, leading=16, spaceAfter=0)
    story: list[Any] = []
    for style, content in parser.blocks:
        if style == "table":
            rows = [[Paragraph(c or "", cell) for c in row] for row in content if row]
            if not rows:
                continue
            width = max(len(r) for r in rows)
            rows = [r + [Paragraph("", cell)] * (width - len(r)) for r in rows]
            col = (A4[0] - 40 * mm) / width
            widths = [col * 0.6, col * 1.4] if width == 2 else [col] * width
            table = Table(rows, colWidths=widths)
            table.setStyle(TableStyle([
                ("GRID", (0, 0), (-1, -1), 0.5, colors.black),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ]))
            story += [table, Spacer(1, 6)]
        else:
            prefix = "• " if style == "bullet" else ""
            story.append(Paragraph(prefix + content, styles.get(style, base)))
    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=A4, leftMargin=20 * mm, rightMargin=20 * mm,
                            topMargin=20 * mm, bottomMargin=20 * mm, title=title,
                            author="petitions notify", creator="petitions notify")
    doc.build(story or [Paragraph(escape(title) or " ", base)])
    return out.getvalue()
