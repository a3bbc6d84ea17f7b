"""JSON API under /api/v1, described by /api/v1/openapi.json. Views are thin: validate, ask ``serving``, answer."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request

from webapp import accounts, rules, serving
from webapp.errors import BadRequest

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")


@blueprint.errorhandler(serving.NotFound)
def not_found(error):
    return jsonify({"error": {"status": 404, "message": str(error)}}), 404


def _n() -> int:
    return serving.check_n(request.args.get("n"), current_app.config["MAX_N"])


@blueprint.get("/customers/<customer_id>/recommendations")
def recommendations(customer_id: str):
    customer_id = serving.check_id(customer_id, "customer id")
    list_name = serving.check_choice(request.args.get("list"), serving.LISTS, "list", default="for_you")
    country = serving.check_country(request.args.get("country"))
    return jsonify(serving.recommendations(customer_id, list_name, _n(), country, rules.filters_from(request.args)))


@blueprint.get("/customers/<customer_id>")
def customer(customer_id: str):
    return jsonify(serving.customer(serving.check_id(customer_id, "customer id")))


@blueprint.get("/items/<item_id>/similar")
def similar(item_id: str):
    return jsonify(serving.similar(serving.check_id(item_id, "item id"), _n(), rules.filters_from(request.args)))


@blueprint.get("/segments")
def segments():
    return jsonify({"segments": serving.segments()})


@blueprint.get("/healthz")
def healthz():
    return jsonify(serving.health())


@blueprint.post("/events")
def events():
    if not request.is_json:
        raise BadRequest("send the event as JSON (Content-Type: application/json)")
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        raise BadRequest("the body is nested too deeply to be an event") from None
    if body is None:
        raise BadRequest("the body is not valid JSON")
    event_id = serving.record_event(body, key_name=request.api_key.name)
    return jsonify({"id": event_id, "status": "stored"}), 201


@blueprint.get("/openapi.json")
def openapi():
    return jsonify(OPENAPI)


def _error(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


_ID = {"type": "string", "pattern": f"^{serving.ID_PATTERN.pattern}$"}
_N = {"name": "n", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}}
_ITEMS = {"type": "array", "items": {"type": "object", "properties": {
    "rank": {"type": "integer"}, "item_id": {"type": "string"}, "description": {"type": "string", "nullable": True},
    "score": {"type": "number"}}}}
_LIST_ITEMS = {"type": "array", "items": {"type": "object", "properties": {
    **_ITEMS["items"]["properties"], "source": {"type": "string", "description": (
        "what placed the item: the batch model, 'events' (the shopper's recent events), both joined by '+', the popularity "
        "list it was topped up from, 'new' (a new item in an exploration slot of discover), 'new_arrivals', or 'promoted' "
        "(a merchandiser's promotion)")}}}}
def _listing(pattern: str) -> dict:
    return {"type": "string", "maxLength": rules.MAX_LISTED_CHARACTERS, "pattern": f"^({pattern}(,{pattern})*)?$"}


_PRICE = {"type": "number", "minimum": 0, "exclusiveMaximum": True, "maximum": 1e9}
_FILTERS = [
    {"name": "exclude_items", "in": "query", "schema": _listing(rules.ID_PATTERN.pattern), "description": "item ids to leave out, comma-separated"},
    {"name": "groups", "in": "query", "schema": _listing(rules.GROUP_PATTERN.pattern), "description": (
        "only items of these groups (comma-separated): the data's category, or the groups learnt from the descriptions")},
    {"name": "exclude_groups", "in": "query", "schema": _listing(rules.GROUP_PATTERN.pattern), "description": "leave out items of these groups"},
    {"name": "min_price", "in": "query", "schema": _PRICE, "description": "only items at this price or more"},
    {"name": "max_price", "in": "query", "schema": _PRICE, "description": (
        "only items at this price or less (below min_price: a range that holds nothing, so an empty list)")},
]
_SIMILAR_ITEMS = {"type": "array", "items": {"type": "object", "properties": {
    **_ITEMS["items"]["properties"], "source": {"type": "string", "description": (
        "'also_bought' (bought together), 'content' (a new item's nearest in words, after its few co-purchases) or 'new' (a new "
        "item near this one in words, in an exploration slot)")}}}}
_COUNTED = {"n_requested": {"type": "integer", "description": "the n asked for"},
            "truncated": {"type": "boolean", "description": "true when the stored list had fewer than n items: all of them are given"}}


def _guarded(responses: dict, scope: str | None) -> dict:
    """An operation's responses with what the key check answers (401; 403 without ``scope``; 429 over the key's rate)."""
    added = {"401": _error("no valid API key ('Authorization: Bearer <key>')"),
             "429": {**_error("over the key's rate; retry after the Retry-After header's seconds"),
                     "headers": {"Retry-After": {"schema": {"type": "integer"}}}}}
    if scope:
        added["403"] = _error(f"the key lacks the {scope} scope")
    return {**responses, **added}
OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "segrec", "version": "1", "description": "Routed recommendations per value segment, and the data behind them."},
    "paths": {
        "/api/v1/customers/{customer_id}/recommendations": {"get": {
            "summary": ("A shopper's list: their segment's routed list fused with what their recent events pull in (their items' "
                        "'also bought' neighbours), topped up from trending; for shoppers the batch does not know, the events' "
                        "neighbours, then trending (per country when given); new_arrivals: items first sold lately"),
            "parameters": [
                {"name": "customer_id", "in": "path", "required": True, "schema": _ID},
                {"name": "list", "in": "query", "schema": {"type": "string", "enum": list(serving.LISTS), "default": "for_you"}},
                _N,
                {"name": "country", "in": "query", "schema": {"type": "string", "pattern": f"^{serving.COUNTRY_PATTERN.pattern}$"},
                 "description": "used for unknown customers"},
                *_FILTERS,
            ],
            "responses": _guarded({"200": {"description": "the list", "content": {"application/json": {"schema": {"type": "object", "properties": {
                "customer_id": {"type": "string"}, "known": {"type": "boolean"}, "segment": {"type": "string", "nullable": True},
                "list": {"type": "string"}, "country": {"type": "string", "nullable": True},
                "source": {"type": "string", "nullable": True, "description": "the sources of the items, joined by '+'"},
                "items": _LIST_ITEMS,
                **_COUNTED}}}}},
                "400": _error("a malformed id, unknown list, n outside 1..100, or a malformed filter")}, "recommendations:read"),
        }},
        "/api/v1/customers/{customer_id}": {"get": {
            "summary": "RFM, CLV, probability alive and segment of a customer",
            "parameters": [{"name": "customer_id", "in": "path", "required": True, "schema": _ID}],
            "responses": _guarded({"200": {"description": "the customer"}, "400": _error("malformed id"), "404": _error("unknown customer")},
                                  "customers:read"),
        }},
        "/api/v1/items/{item_id}/similar": {"get": {
            "summary": "Customers who bought this item also bought",
            "parameters": [{"name": "item_id", "in": "path", "required": True, "schema": _ID}, _N, *_FILTERS],
            "responses": _guarded({"200": {"description": "similar items", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"item_id": {"type": "string"}, "description": {"type": "string", "nullable": True},
                                                 "items": _SIMILAR_ITEMS, **_COUNTED}}}}},
                "400": _error("malformed id, n or filter"), "404": _error("unknown item")}, "recommendations:read"),
        }},
        "/api/v1/segments": {"get": {"summary": "The value segments with their sizes and means", "responses": _guarded({
            "200": {"description": "segments"}, "503": _error("no store can be served")}, "recommendations:read")}},
        "/api/v1/healthz": {"get": {"summary": "The store being served: run id, as-of date, age (no key needed, nothing personal)",
                                    "security": [], "responses": {"200": {"description": "healthy"}, "503": _error("no store can be served")}}},
        "/api/v1/openapi.json": {"get": {"summary": "This document", "responses": _guarded({"200": {"description": "the document"}}, None)}},
        "/api/v1/events": {"post": {
            "summary": ("Record a view, add to cart or purchase: the shopper's next lists follow it (a bought item leaves discover, "
                        "the event's 'also bought' neighbours move up)"),
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "required": [
                "customer_id", "item_id", "type", "timestamp"], "additionalProperties": False, "properties": {
                "customer_id": _ID, "item_id": _ID, "type": {"type": "string", "enum": list(serving.EVENT_TYPES)},
                "timestamp": {"type": "string", "format": "date-time"}, "session_id": {**_ID, "nullable": True},
                "quantity": {"type": "number", "nullable": True, "exclusiveMinimum": True, "minimum": -1e9, "exclusiveMaximum": True,
                             "maximum": 1e9},
                "price": {"type": "number", "nullable": True, "exclusiveMinimum": True, "minimum": -1e9, "exclusiveMaximum": True,
                          "maximum": 1e9}}}}}},
            "responses": _guarded({"201": {"description": "stored"}, "400": _error("invalid event"), "413": _error("body too large")},
                                  "events:write"),
        }},
    },
    "security": [{"apiKey": []}],
    "components": {"securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": (
        "an API key made by an admin (python -m webapp.keys create); scopes: " + ", ".join(accounts.SCOPES))}},
                   "schemas": {"Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
        "status": {"type": "integer"}, "message": {"type": "string"}}}}}}},
}
