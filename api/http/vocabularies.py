"""/v1/vocabularies: the workspace's controlled vocabularies, with their terms and synonyms.

The built-in vocabularies (country, lifecycle_stage, lead_source, industry, seniority,
department) apply until the workspace defines its own list of the same name; it may also keep
lists of its own. Any key reads them; only an admin key replaces (PUT) or removes (DELETE, back
to the built-in) a list. Whether a value outside a vocabulary is refused or kept and flagged is
the workspace's `on_unknown` (/v1/quality/settings). Other server processes see a change within
a few seconds (each caches a workspace's settings briefly).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from litestar import Controller, Request, delete, get, put
from litestar.openapi.spec import Example
from litestar.params import Body, Parameter
from litestar.status_codes import HTTP_204_NO_CONTENT
from msgspec import Meta

from api.http.access import require_admin
from api.http.context import reason_from
from api.http.docs import ReasonHeader
from api.http.problems import FieldError, ProblemError, problem_responses
from api.http.representations import SINGLE_LINE, Reason
from api.http.services import Services
from ledger.vocabulary import BUILTIN, Term, Vocabulary
from schema.vocabularies import LIFECYCLE_STAGES, VOCABULARY_FIELDS

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
CODE_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9_.:/&+ -]{0,62}[A-Za-z0-9_.])?$"
MAX_TERMS = 2000
FIELD_OF = {vocabulary: field for field, vocabulary in VOCABULARY_FIELDS.items()}

VocabularyName = Annotated[str, Parameter(
    description="A built-in vocabulary (" + ", ".join(BUILTIN) + ") or a list of the "
    "workspace's own: lowercase letters, digits and `_`.", pattern=NAME_PATTERN,
    max_length=64,
)]
Spelling = Annotated[str, Meta(min_length=1, max_length=200, pattern=SINGLE_LINE)]


class TermBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    code: Annotated[str, Meta(pattern=CODE_PATTERN, description="The stored value: letters, "
                              "digits, spaces and `_.:/&+-`, at most 64.", examples=["fintech"])]
    label: Annotated[Spelling | None, Meta(description="How people name it.")] = None
    synonyms: Annotated[list[Spelling], Meta(
        max_length=100, description="Other spellings that mean this term (case-insensitive).",
        examples=[["financial technology", "fin-tech"]])] = []


class VocabularyBody(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The workspace's list, replacing any list of that name it had."""

    terms: Annotated[list[TermBody], Meta(min_length=1, max_length=MAX_TERMS)]
    reason: Reason | None = None


class TermView(msgspec.Struct, frozen=True):
    code: str
    label: str | None
    synonyms: list[str]


class VocabularyView(msgspec.Struct, frozen=True):
    name: str
    source: Annotated[Literal["builtin", "workspace"], Meta(
        description="`workspace` when the workspace defined this list (overriding any built-in "
        "one of the name).")]
    field: Annotated[str | None, Meta(description="The lead field this vocabulary controls; "
                                      "null for a list of the workspace's own.")]
    terms: list[TermView]


class VocabularyList(msgspec.Struct, frozen=True):
    data: list[VocabularyView]


VOCABULARY_BODY = Body(
    title="A vocabulary's terms",
    examples=[Example(summary="Industries with synonyms", value={
        "terms": [
            {"code": "fintech", "label": "Financial technology",
             "synonyms": ["financial technology", "payments"]},
            {"code": "software", "label": "Software", "synonyms": ["saas", "tech"]},
            {"code": "other"},
        ],
        "reason": "Our segments",
    })],
)


def _view(vocabulary: Vocabulary, source: str) -> VocabularyView:
    return VocabularyView(
        name=vocabulary.name, source=source, field=FIELD_OF.get(vocabulary.name),
        terms=[TermView(t.code, t.label, list(t.synonyms)) for t in vocabulary.terms],
    )


def _source(name: str, vocabularies: dict[str, Vocabulary]) -> str:
    return "builtin" if vocabularies.get(name) is BUILTIN.get(name) else "workspace"


def _terms(name: str, body: VocabularyBody) -> list[Term]:
    """The body's terms, checked: unique codes, no spelling naming two terms, and (for the
    lifecycle stage, which the lead's contract fixes) only the built-in stages."""
    errors: list[FieldError] = []
    spellings: dict[str, str] = {}
    terms = []
    for i, term in enumerate(body.terms):
        label = " ".join(term.label.split()) if term.label else None
        synonyms = tuple(dict.fromkeys(" ".join(s.split()) for s in term.synonyms))
        if name == "lifecycle_stage" and term.code not in LIFECYCLE_STAGES:
            errors.append(FieldError(field=f"terms[{i}].code", message="a lifecycle stage is "
                                     "one of " + ", ".join(LIFECYCLE_STAGES),
                                     allowed=list(LIFECYCLE_STAGES)))
        if term.code.lower() in spellings and spellings[term.code.lower()] == term.code:
            errors.append(FieldError(field=f"terms[{i}].code", message="a code appears twice"))
        for where, spelling in (("code", term.code), ("label", label),
                                *(("synonyms", s) for s in synonyms)):
            if not spelling:
                continue
            owner = spellings.setdefault(spelling.lower(), term.code)
            if owner != term.code:
                errors.append(FieldError(field=f"terms[{i}].{where}", message=f"{spelling!r} "
                                         f"already names the term {owner!r}"))
        terms.append(Term(code=term.code, label=label, synonyms=synonyms))
    if errors:
        raise ProblemError("validation-failed", "the vocabulary is ambiguous or invalid",
                           errors=errors)
    return terms


class VocabulariesController(Controller):
    path = "/v1/vocabularies"
    tags = ("vocabularies",)

    @get("/", summary="The workspace's vocabularies",
         description="Every vocabulary in force: the built-in ones (unless the workspace "
         "replaced them) and the workspace's own, each with its terms and synonyms.",
         responses=problem_responses(401, 429))
    async def index(self, request: Request, services: Services) -> VocabularyList:
        vocabularies = (await services.writer.quality.load(request.user.key.workspace)).vocabularies
        return VocabularyList(data=[
            _view(v, _source(name, vocabularies)) for name, v in sorted(vocabularies.items())
        ])

    @get("/{name:str}", summary="One vocabulary",
         responses=problem_responses(401, 404, 429))
    async def one(self, request: Request, name: VocabularyName, services: Services
                  ) -> VocabularyView:
        vocabularies = (await services.writer.quality.load(request.user.key.workspace)).vocabularies
        if name not in vocabularies:
            raise ProblemError("not-found", f"no vocabulary {name!r} in this workspace")
        return _view(vocabularies[name], _source(name, vocabularies))

    @put(
        "/{name:str}",
        summary="Replace a vocabulary (admin)",
        description="Sets the workspace's list `name` (replacing the built-in list of that "
        "name, if any): each term's code, label and synonyms. Later creates resolve values "
        "against it (`\"payments\"` → `fintech`); leads already stored keep their values. A "
        "spelling may name one term only; `lifecycle_stage` takes only the built-in stages "
        "(with labels and synonyms of your own).",
        guards=[require_admin],
        responses=problem_responses(400, 401, 403, 413, 415, 422, 429),
    )
    async def replace(
        self, request: Request, name: VocabularyName,
        data: Annotated[VocabularyBody, VOCABULARY_BODY], services: Services,
        x_reason: ReasonHeader = None,
    ) -> VocabularyView:
        terms = _terms(name, data)
        key = request.user.key
        await services.writer.quality.save_vocabulary(
            key.workspace, name, terms, key.key_id, reason_from(request, data.reason)
        )
        return _view(Vocabulary(name=name, terms=tuple(terms)), "workspace")

    @delete(
        "/{name:str}",
        status_code=HTTP_204_NO_CONTENT,
        summary="Remove the workspace's vocabulary (admin)",
        description="Back to the built-in list of that name (or, for a list of the "
        "workspace's own, no list). Removing a list the workspace does not have changes "
        "nothing.",
        guards=[require_admin],
        responses=problem_responses(401, 403, 404, 429),
    )
    async def reset(self, request: Request, name: VocabularyName, services: Services) -> None:
        workspace = request.user.key.workspace
        vocabularies = (await services.writer.quality.load(workspace)).vocabularies
        if name not in vocabularies:
            raise ProblemError("not-found", f"no vocabulary {name!r} in this workspace")
        await services.writer.quality.reset_vocabulary(workspace, name)
