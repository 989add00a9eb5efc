"""The ``endpoint`` of a request: the route template it matched, never its raw path."""

from __future__ import annotations

from typing import Any

from golden_signals.asgi import Scope

#: The ``endpoint`` of requests that matched no route: one bounded value for all of them
#: (scanners' 404s never add a series).
UNMATCHED_ENDPOINT = "unmatched"


def route_template(scope: Scope, root_path: str = "") -> str | None:
    """The template of the route ``scope`` matched (``/items/{item_id}``), with the
    prefixes of the ``Mount``s it went through, or None when no route matched.

    Starlette's and FastAPI's routers put the matched route in ``scope["route"]`` at each
    level, and a ``Mount`` adds its prefix to ``scope["root_path"]``: the template is
    what the mounts added to ``root_path`` (the value it had when the request came in,
    the proxy's prefix, left out) followed by the innermost route's path. That is the
    text the mounts matched: for a ``Mount("/t/{tenant}")`` it would be one value per
    tenant, so the Mounts an instrumented app had when it started note their templates
    instead (`template_mounts`), and those are used. A route that
    matched the path but not the method (a 405) still names its template. FastAPI
    (≥ 0.160) keeps an included router's routes as they were declared, without the
    prefixes of ``include_router``: the path with them is its
    ``scope["fastapi"]["effective_route_context"]``'s, used when present.

    A request that went no further than a ``Mount`` (Starlette leaves the Mount as its
    ``route``, FastAPI none) was served by an app of the Mount's own, with no routes
    (static files, a plain ASGI app): the Mount's template names it (``/static``). Had
    the Mount routes of its own, none matched: None, as for any unmatched path.
    """
    route = scope.get("route")
    if route is None or _is_mount(route):
        leaf = scope.get(LEAF_KEY)  # noted by the innermost Mount passed (`template_mounts`)
        if leaf is None:  # no Mount noted it: Starlette's own ``route``, if any
            leaf = route is not None and not _routes_of(route)
        if not leaf:
            return None
        path = ""
    else:
        declared = getattr(route, "path", None)
        fastapi = scope.get("fastapi")
        if isinstance(fastapi, dict):
            effective = getattr(fastapi.get("effective_route_context"), "path", None)
            if isinstance(effective, str) and effective:
                declared = effective
        if not isinstance(declared, str) or not declared:
            return None
        path = declared
    mounts = scope.get(MOUNTS_KEY)
    if isinstance(mounts, str):  # the templates of the Mounts passed (`template_mounts`)
        return mounts + path or "/"
    mounted = scope.get("root_path", "")
    if isinstance(mounted, str) and mounted.startswith(root_path) and mounted != root_path:
        return mounted[len(root_path) :] + path
    return path or None


#: Where `template_mounts`' Mounts note the templates of the Mounts a request passed,
#: and whether the innermost of them mounts an app without routes of its own.
MOUNTS_KEY = "golden_signals.mounts"
LEAF_KEY = "golden_signals.mount_leaf"


def template_mounts(app: object) -> None:
    """Make every ``Mount`` reachable from ``app``'s routes note its path template in the
    request's scope when it matches (after those of the Mounts around it), so that
    `route_template` names ``/t/{tenant}/items`` rather than the tenant's text. Each
    Mount's ``matches`` is wrapped once, on the Mount object itself."""
    for route in _routes_of(app):
        if not _is_mount(route) or getattr(route, "_golden_signals_mount", False):
            continue
        route.matches = _noting(route.matches, route.path, not _routes_of(route))
        route._golden_signals_mount = True
        template_mounts(route)


def _routes_of(app: object, depth: int = 0) -> Any:
    """The routes of an app, a router or a ``Mount`` (none for a plain ASGI callable),
    through middleware wrapped around it (``Mount("/v2", GZipMiddleware(sub_app))``:
    each middleware's ``app``, a few levels deep)."""
    routes = getattr(app, "routes", None)
    if routes is None:
        routes = getattr(getattr(app, "router", None), "routes", None)
    if not routes and depth < 8:
        inner = getattr(app, "app", None)
        if inner is not None and inner is not app:
            return _routes_of(inner, depth + 1)
    return routes or ()


def _is_mount(route: object) -> bool:
    """Whether ``route`` is a ``Mount``: a path template in front of routes of its own
    (not a ``Host``, which has no path, nor a route with an endpoint)."""
    return (
        isinstance(getattr(route, "path", None), str)
        and hasattr(route, "routes")
        and not hasattr(route, "endpoint")
    )


def _noting(matches: Any, template: str, leaf: bool) -> Any:
    def noted(scope: Scope) -> Any:
        match, child = matches(scope)
        if child:  # a full or partial match: its scope goes on to the mounted app
            child[MOUNTS_KEY] = scope.get(MOUNTS_KEY, "") + template
            child[LEAF_KEY] = leaf
        return match, child

    return noted


def endpoint_of(scope: Scope, root_path: str = "") -> str:
    """`route_template`, or `UNMATCHED_ENDPOINT`."""
    return route_template(scope, root_path) or UNMATCHED_ENDPOINT


def declared_routes(
    app: object, prefix: str = "", _within: frozenset[int] = frozenset()
) -> list[tuple[str, frozenset[str]]]:
    """Every route template ``app`` declares, with its methods (``WEBSOCKET`` for a
    WebSocket route): through ``Mount``s, included routers (FastAPI's prefixes
    included) and the apps they mount. What `route_template` names at request time. A
    Mount that leads back to routes it is among (an app mounted inside itself, alone or
    behind a middleware) adds nothing more (``_within``: the route lists on the way)."""
    found: list[tuple[str, frozenset[str]]] = []
    routes = _routes_of(app)
    if id(routes) in _within:
        return found
    _within = _within | {id(routes)}
    for route in routes:
        if hasattr(route, "effective_candidates"):  # FastAPI's included router
            found += _included(route, prefix)
            continue
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            continue
        if _is_mount(route):
            inner = declared_routes(route, prefix + path, _within)
            # A Mount of an app without routes (static files) is a route of its own.
            found += inner if _routes_of(route) else [(prefix + path or "/", frozenset())]
            continue
        methods = getattr(route, "methods", None)
        if methods is None and type(route).__name__.startswith("WebSocket"):
            methods = {"WEBSOCKET"}
        found.append((prefix + path, frozenset(methods or ())))
    return found


def _included(router: object, prefix: str) -> list[tuple[str, frozenset[str]]]:
    found: list[tuple[str, frozenset[str]]] = []
    for candidate in router.effective_candidates():  # type: ignore[attr-defined]
        if hasattr(candidate, "effective_candidates"):
            found += _included(candidate, prefix)
            continue
        original = getattr(candidate, "original_route", None)
        path = candidate.path
        methods = getattr(candidate, "methods", None) or ()
        if type(original).__name__.endswith("WebSocketRoute"):  # its context has no path
            context = getattr(router, "include_context", None)
            path = getattr(context, "prefix", "") + original.path  # type: ignore[union-attr]
            methods = {"WEBSOCKET"}
        found.append((prefix + path, frozenset(methods)))
    return found
