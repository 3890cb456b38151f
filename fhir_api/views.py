"""Route FHIR's interactions to :mod:`fhir_api.searches`; this module only authenticates
(DICOMweb's ``auth``: Basic, bearer token, session), negotiates and turns refusals into
OperationOutcomes. The capability statement is public; everything else needs a caller."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from http import HTTPStatus
from typing import Concatenate, ParamSpec

from django.http import Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt

from audit.trail import Actor
from dicomweb import auth
from imaging import principals

from . import capability, params, searches
from .resources import Urls
from .responses import FHIR_JSON, acceptable, outcome, outcome_from_problem, resource_response

P = ParamSpec("P")
View = Callable[Concatenate[HttpRequest, P], HttpResponse]


def _endpoint(*, public: bool = False) -> Callable[[View[P]], View[P]]:
    def decorate(view: View[P]) -> View[P]:
        def wrapper(request: HttpRequest, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
            if request.method not in ("GET", "HEAD"):
                return outcome(HTTPStatus.METHOD_NOT_ALLOWED,
                               "this FHIR server is read-only: use GET",
                               headers={"Allow": "GET, HEAD"})
            if not acceptable(request):
                return outcome(HTTPStatus.NOT_ACCEPTABLE,
                               f"resources are available as {FHIR_JSON} only")
            if not public:
                refused = auth.authenticate(request)
                if refused is not None:
                    return outcome_from_problem(refused)
            try:
                response = view(request, *args, **kwargs)
            except params.SearchError as exc:
                response = outcome(HTTPStatus.BAD_REQUEST, str(exc))
            except Http404:
                response = outcome(HTTPStatus.NOT_FOUND, "no such resource")
            if request.method == "HEAD":
                response.content = b""
            return response

        # csrf_exempt: read-only, unsafe methods are refused above.
        return csrf_exempt(wraps(view)(wrapper))  # type: ignore[return-value]
    return decorate


def _urls(request: HttpRequest) -> Urls:
    fhir = request.build_absolute_uri(reverse("fhir:metadata")).removesuffix("/metadata")
    dicomweb = request.build_absolute_uri(reverse("dicomweb:studies")).removesuffix("/studies")
    return Urls(fhir=fhir, dicomweb=dicomweb)


def _kind(resource_type: str) -> searches.Kind:
    kind = searches.KINDS.get(resource_type)
    if kind is None:
        raise Http404
    return kind


@_endpoint(public=True)
def metadata(request: HttpRequest) -> HttpResponse:
    return resource_response(capability.statement(_urls(request)))


@_endpoint()
def search(request: HttpRequest, resource_type: str) -> HttpResponse:
    kind = _kind(resource_type)
    wanted = params.parse(request, kind.parameters)
    urls = _urls(request)
    result = kind.search(principals.of_request(request), Actor.from_request(request), wanted,
                         urls)
    return resource_response(searches.searchset(kind, wanted, result, urls))


@_endpoint()
def read(request: HttpRequest, resource_type: str, resource_id: str) -> HttpResponse:
    kind = _kind(resource_type)
    resource = kind.read(principals.of_request(request), Actor.from_request(request),
                         resource_id, _urls(request))
    return resource_response(resource)
