"""The HTTP API of `grove serve`: a FastAPI app over one ModelWorker per model. Torch-free.

    GET  /v1/models                        the models: task, classes, what each takes
    POST /v1/models/{name}/predict         texts as JSON; images or audio as multipart or raw bytes
    POST /v1/models/{name}/generate        JSON; "stream": true answers with server-sent events
    POST /v1/models/{name}/explain         run directories: why the model answered what it did,
                                           taking what predict takes (language models: prompts)
    GET  /healthz  /readyz  /metrics       liveness, readiness (false while draining), Prometheus
    GET  /openapi.json                     this API's schema: one operation per model
    GET  /                                 the demo page

Every error is JSON, {"error": "what is wrong and what to do"}, with its status: 400 unreadable
input or bad option, 401 missing or wrong API key, 404 unknown model, 413 too large, 415 wrong
content type, 422 a body that does not fit the schema, 503 queue full or shutting down (with
Retry-After), 504 not answered in time. Uploads are read into memory up to the size limit and
decoded there: nothing from a request is written to disk or unpickled.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import importlib.util
import json
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from grove import __version__
from grove.errors import GroveError
from grove.serve.batching import DeadlineExceeded, ModelWorker, QueueFull

# Content types a predict request may carry, beside JSON.
RAW_TYPES = {
    "image": ("image/png", "image/jpeg", "image/bmp", "image/gif", "image/webp", "image/tiff"),
    "audio": ("audio/wav", "audio/x-wav", "audio/wave", "audio/flac", "audio/ogg"),
}
RETRY_AFTER = "1"  # seconds, for 503
INLINE_DECODE = 16 << 10  # inputs up to this many bytes (or characters) in all are decoded on the event loop
METHOD_HELP = "how to explain: auto picks the most faithful method for the model"


@dataclass
class Limits:
    max_body: int = 10 << 20  # bytes of one request body
    max_inputs: int = 64  # inputs in one predict request
    max_explain_inputs: int = 8  # inputs in one explain request: each costs tens of forward passes
    max_text: int = 10_000  # characters of one text or prompt
    max_new_tokens: int = 1024
    timeout: float = 30.0  # seconds until a request is answered (504 after)


@dataclass
class ServerState:
    workers: dict[str, ModelWorker]
    limits: Limits = field(default_factory=Limits)
    api_key: str | None = None
    draining: bool = False
    in_flight: int = 0


# -- schemas -------------------------------------------------------------------------------------
class PredictBody(BaseModel):
    """A text model's JSON body."""

    model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, not a default

    inputs: list[Annotated[str, Field(min_length=1, pattern=r"\S")]] = Field(min_length=1, description="texts to classify")
    top_k: int = Field(5, ge=1, le=1000, description="labels per input, most probable first")


class Label(BaseModel):
    label: str
    probability: float


class Prediction(BaseModel):
    top: list[Label] | None = Field(None, description="classifiers: the most probable labels")
    transcript: str | None = Field(None, description="transcription models: what was said")


class PredictResponse(BaseModel):
    model: str
    results: list[Prediction]


class GenerateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    max_new_tokens: int = Field(200, ge=1)
    temperature: float = Field(0.8, ge=0, le=100, description="0 picks the most probable token")
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stream: bool = Field(False, description="answer with server-sent events, one per piece of text")


class GenerateResponse(BaseModel):
    model: str
    prompt: str
    text: str = Field(description="the continuation, without the prompt")


class ExplainBody(BaseModel):
    """A text model's or a language model's JSON body to explain."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1, description="texts or prompts to explain")
    method: str = Field("auto", description=METHOD_HELP)
    target: str | None = Field(None, description="the label to explain (a language model: the next token); "
                                                 "by default the predicted one")


class TokenAttribution(BaseModel):
    token: str
    attribution: float = Field(description="positive: the token raised the explained probability")


class EmittedCharacter(BaseModel):
    char: str
    frame: int = Field(description="the input frame where the greedy path emits it")


class Deletion(BaseModel):
    auc: float | None = Field(description="area under the probability as the top-ranked evidence is removed "
                                          "first; lower is more faithful (null: nothing to remove)")
    random_auc: float | None = Field(description="the same in random orders, to compare with")


class Explanation(BaseModel):
    input: str = Field(description="the text or prompt, or #i for the i-th file")
    method: str
    target: str = Field(description="what was explained: the label, the next token or the transcript")
    probability: float
    top: list[Label]
    deletion: Deletion
    tokens: list[TokenAttribution] | None = Field(None, description="text and prompts: each token's attribution")
    characters: list[EmittedCharacter] | None = Field(None, description="transcription: the transcript's characters")
    image: str | None = Field(None, description="images and audio: the picture, a data:image/png;base64 URI")


class ExplainResponse(BaseModel):
    model: str
    results: list[Explanation]


class ModelInfo(BaseModel):
    name: str
    task: Literal["classification", "ctc", "lm"]
    modality: Literal["image", "audio", "text"]
    source: Literal["run", "export"]
    classes: list[str]
    input: dict = Field(description="what the model takes: kind (image, audio, text, prompt) and its sizes")
    endpoints: list[str]
    explain: bool = Field(description="whether POST .../explain explains it (run directories do, exports do not)")
    explain_methods: list[str] = Field(description="the explanation methods that apply to it, auto first")


class ModelList(BaseModel):
    models: list[ModelInfo]


class ErrorBody(BaseModel):
    error: str


class Health(BaseModel):
    status: str


def error(status: int, message: str, **headers) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        self.status, self.message = status, message


ERRORS = {code: {"model": ErrorBody} for code in (400, 413, 415, 422, 503, 504)}


# -- the app -------------------------------------------------------------------------------------
def create_app(state: ServerState) -> FastAPI:
    """The app. Each model gets operations of its own in the schema (its content types, its
    options), so a client generated from /openapi.json knows what every model takes."""
    names = sorted(state.workers)
    methods = {n: _explain_methods(state.workers[n].predictor) for n in names}
    app = FastAPI(
        title="grove serve", version=__version__, docs_url=None, redoc_url=None, openapi_url=None,
        description="Predictions and generation from grove runs and exports.",
        lifespan=_lifespan(state),
    )
    metrics = Metrics(state)
    app.add_middleware(Gate, state=state, metrics=metrics)
    bearer = HTTPBearer(auto_error=False, description="the server's API key (--api-key-env)")

    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if credentials is None:
            raise ApiError(401, "this server needs its API key: send the header 'Authorization: Bearer KEY'")
        if not hmac.compare_digest(credentials.credentials.encode(), state.api_key.encode()):
            raise ApiError(401, "the API key is wrong: send the server's key as 'Authorization: Bearer KEY'")

    # Without a key the schema declares no security: it describes the server as it runs.
    guarded = [Depends(authorized)] if state.api_key is not None else []
    unauthorized = {401: {"model": ErrorBody}} if guarded else {}

    def worker(name: str) -> ModelWorker:
        if name not in state.workers:
            from grove.errors import did_you_mean

            raise ApiError(404, f"no model named {name!r}{did_you_mean(name, names)}; GET /v1/models lists them")
        return state.workers[name]

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        headers = {503: {"Retry-After": RETRY_AFTER}, 401: {"WWW-Authenticate": "Bearer"}}.get(exc.status, {})
        return error(exc.status, exc.message, **headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        if request.url.path.endswith("/generate") and _content_type(request) != "application/json":
            return error(415, 'generate takes application/json: {"prompt": "...", "max_new_tokens": 200, ...}')
        return error(422, "the request does not fit the schema: " + _schema_errors(exc.errors(), GenerateBody.model_fields))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc: StarletteHTTPException):
        headers = exc.headers or {}  # e.g. Allow with a 405
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no endpoint {request.url.path}: GET /v1/models lists the models and their endpoints"
        elif exc.status_code == 405:
            allow = next((v for k, v in headers.items() if k.lower() == "allow"), None)
            message = f"{request.url.path} does not take {request.method}; it takes {allow or 'other methods'}"
        return error(exc.status_code, message, **headers)

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz():
        """The process is up (it answers even while a long batch runs)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=Health, responses={503: {"model": Health}}, tags=["health"])
    async def readyz():
        """Ready for requests; 503 while the server drains before it stops."""
        if state.draining:
            return JSONResponse({"status": "draining"}, status_code=503, headers={"Retry-After": RETRY_AFTER})
        return {"status": "ready"}

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=guarded, responses=unauthorized,
             tags=["health"])
    async def prometheus():
        """Prometheus metrics: requests by status, latency, batch sizes, queue depth."""
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/openapi.json", include_in_schema=False, dependencies=guarded)
    async def openapi():
        return JSONResponse(app.openapi())

    @app.get("/v1/models", response_model=ModelList, dependencies=guarded, responses=unauthorized, tags=["models"])
    async def list_models():
        """The models this server serves."""
        return {"models": [_info(state.workers[n], methods[n]) for n in names]}

    @app.get("/v1/models/{name}", response_model=ModelInfo, dependencies=guarded,
             responses={**unauthorized, 404: {"model": ErrorBody}}, tags=["models"])
    async def model_info(name: str = Path(description="a model's name", json_schema_extra={"enum": names})):
        """One model: its task, classes and what it takes."""
        return _info(worker(name), methods[name])

    async def predict(name: str, request: Request, top_k: int, beam_width: int):
        w = worker(name)
        if w.predictor.task == "lm":
            raise ApiError(400, f"model {name!r} is a language model: POST /v1/models/{name}/generate")
        _check_query(request, ["beam_width"] if w.predictor.task == "ctc" else ["top_k"])
        raw_inputs, parsed = await _request_inputs(request, w, state.limits, PredictBody)
        if parsed is not None:
            top_k = parsed.top_k
        read = functools.partial(_read_all, w.predictor.read)
        inline = sum(len(x) for x in raw_inputs) <= INLINE_DECODE
        results = await _answer(w.predict(raw_inputs, read, top_k, beam_width, _timeout(request, state.limits), inline))
        if w.predictor.task == "ctc":
            body = {"model": name, "results": [{"transcript": text} for text in results]}
        else:
            body = {"model": name, "results": [{"top": [{"label": lab, "probability": p} for lab, p in row]}
                                               for row in results]}
        return JSONResponse(body)  # built to the schema: no second validation on the way out

    async def generate(name: str, body: GenerateBody, request: Request):
        w = worker(name)
        if w.predictor.task != "lm":
            raise ApiError(400, f"model {name!r} does not generate text: POST /v1/models/{name}/predict")
        limits = state.limits
        if len(body.prompt) > limits.max_text:
            raise ApiError(413, f"the prompt has {len(body.prompt)} characters; this server takes at most {limits.max_text}")
        if body.max_new_tokens > limits.max_new_tokens:
            raise ApiError(413, f"max_new_tokens is {body.max_new_tokens}; this server makes at most {limits.max_new_tokens}")
        options = body.model_dump(exclude={"prompt", "stream"})
        timeout = _timeout(request, limits)
        pieces = await _answer(w.generate(body.prompt, options, timeout))  # the timeout covers the first piece
        if not body.stream:  # ... and here the whole text
            try:
                text = await asyncio.wait_for(_join(pieces), timeout)
            except asyncio.TimeoutError:
                raise ApiError(504, f"model {name!r} did not make {body.max_new_tokens} tokens within {timeout:g} s: "
                                    "ask for fewer, or stream them") from None
            return {"model": name, "prompt": body.prompt, "text": text}

        async def events():
            text = []
            try:
                async for piece in pieces:
                    text.append(piece)
                    yield f"data: {json.dumps({'text': piece})}\n\n"
            except GroveError as err:
                yield f"event: error\ndata: {json.dumps({'error': str(err)})}\n\n"
                return
            finally:
                await pieces.aclose()  # a client that went away frees its place at once
            yield f"event: done\ndata: {json.dumps({'text': ''.join(text)})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def explain(name: str, request: Request, method: str, target: str | None):
        w = worker(name)
        p, limits = w.predictor, state.limits
        if not methods[name]:
            raise ApiError(400, _cannot_explain(w))
        _check_query(request, [] if p.task == "lm" else ["method"] if p.task == "ctc" else ["method", "target"])
        if p.task == "lm" and _content_type(request) != "application/json":
            raise ApiError(415, 'explaining a language model takes application/json: {"inputs": ["a prompt"]}')
        raw_inputs, parsed = await _request_inputs(request, w, limits, ExplainBody)
        if parsed is not None:
            method, target = parsed.method, parsed.target
        if len(raw_inputs) > limits.max_explain_inputs:
            raise ApiError(413, f"the request has {len(raw_inputs)} inputs; this server explains at most "
                                f"{limits.max_explain_inputs} at once (each takes tens of forward passes)")
        job = functools.partial(_explain_all, p, raw_inputs, method, target)
        explanations = await _answer(w.explain(job, len(raw_inputs), _timeout(request, limits)))
        results = await asyncio.get_running_loop().run_in_executor(None, _explanation_bodies, explanations)
        return JSONResponse({"model": name, "results": results})

    for name in names:
        _add_model_routes(app, state.workers[name], predict, generate, guarded, unauthorized)
        if methods[name]:
            _add_explain_route(app, state.workers[name], explain, methods[name], guarded, unauthorized)

    # Any other name: 404 (or 400 for the wrong endpoint of a served model), outside the schema.
    @app.post("/v1/models/{name}/predict", include_in_schema=False, dependencies=guarded)
    async def predict_other(request: Request, name: str, top_k: int = Query(5, ge=1, le=1000),
                            beam_width: int = Query(8, ge=0, le=64)):
        return await predict(name, request, top_k, beam_width)

    @app.post("/v1/models/{name}/generate", include_in_schema=False, dependencies=guarded)
    async def generate_other(body: GenerateBody, request: Request, name: str):
        return await generate(name, body, request)

    @app.post("/v1/models/{name}/explain", include_in_schema=False, dependencies=guarded)
    async def explain_other(request: Request, name: str, method: str = "auto", target: str | None = None):
        return await explain(name, request, method, target)

    static = resources.files("grove.serve") / "static"

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def demo():
        return HTMLResponse((static / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app


def _lifespan(state: ServerState):
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        for w in state.workers.values():
            w.start()
        yield
        for w in state.workers.values():
            await w.stop()

    return lifespan


def _info(w: ModelWorker, methods: list[str]) -> dict:
    p = w.predictor
    endpoints = ["generate" if p.task == "lm" else "predict"] + (["explain"] if methods else [])
    return {"name": w.name, "task": p.task, "modality": p.modality, "source": p.source, "classes": p.classes,
            "input": p.input_info(), "endpoints": [f"/v1/models/{w.name}/{e}" for e in endpoints],
            "explain": bool(methods), "explain_methods": methods}


def _explain_methods(p) -> list[str]:
    """The explanation methods for a model: none for an export (it has no gradients) or without Captum."""
    if p.source != "run" or importlib.util.find_spec("captum") is None:
        return []
    from grove.explain import methods_for

    return methods_for(p.model, p.modality)


def _cannot_explain(w: ModelWorker) -> str:
    if w.predictor.source == "export":
        return (f"model {w.name!r} is an export, which cannot explain: explanations take gradients through the "
                "PyTorch model, so serve the run directory it was exported from")
    return "this server cannot explain: explanations need Captum, in the explain extra: pip install 'grove[explain]'"


def _explain_all(p, raw_inputs: list, method: str, target: str | None) -> list:
    """The explanations of a request's inputs, on the model's inference thread (grove.explain)."""
    from grove.explain import explain_items

    items = _read_all(p.read_prompt if p.task == "lm" else p.read, raw_inputs)
    targets = None if target is None else [p.target_index(target)] * len(items)
    names = [x if isinstance(x, str) else f"#{i}" for i, x in enumerate(raw_inputs)]
    return explain_items(p, items, names, method, targets)


def _explanation_bodies(explanations: list) -> list[dict]:
    """Each explanation as JSON; for images and audio with its picture, drawn here, off the model's thread."""
    bodies = []
    for e in explanations:
        body = e.to_dict()
        if e.tokens is None:
            body["image"] = "data:image/png;base64," + base64.b64encode(e.png()).decode()
        bodies.append(body)
    return bodies


async def _join(pieces) -> str:
    try:
        return "".join([piece async for piece in pieces])
    finally:
        await pieces.aclose()


def _read_all(read, raw_inputs: list) -> list:
    """Each input read (predictor.read: as predict_batch takes it); 400 for the first that cannot be."""
    items = []
    for i, raw in enumerate(raw_inputs):
        try:
            items.append(read(raw))
        except GroveError as err:
            where = f"input {i}: " if len(raw_inputs) > 1 else ""
            raise ApiError(400, f"{where}{err}") from None
    return items


def _timeout(request: Request, limits: Limits) -> float:
    """The server's timeout, or less when the client asks (header X-Request-Timeout, seconds)."""
    asked = request.headers.get("x-request-timeout")
    if asked is None:
        return limits.timeout
    try:
        value = float(asked)
    except ValueError:
        raise ApiError(400, f"X-Request-Timeout must be a number of seconds; got {asked!r}") from None
    if not value > 0:
        raise ApiError(400, f"X-Request-Timeout must be above 0 seconds; got {asked!r}")
    return min(value, limits.timeout)


async def _answer(call):
    """Await a worker call, turning its refusals into HTTP errors."""
    try:
        return await call
    except QueueFull as err:
        raise ApiError(503, f"{err}: retry shortly") from None
    except DeadlineExceeded as err:
        raise ApiError(504, str(err)) from None
    except GroveError as err:
        raise ApiError(400, str(err)) from None


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past `limit` bytes before more is read."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is {int(declared)} bytes; this server takes at most {limit} (--max-upload-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over {limit} bytes, the most this server takes (--max-upload-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _check_query(request: Request, known: list[str]) -> None:
    """422 for a query parameter the operation does not take: a misspelt option is not a default."""
    for key in request.query_params:
        if key not in known:
            from grove.errors import did_you_mean

            takes = ", ".join(known) if known else "its options in the JSON body"
            raise ApiError(422, f"unknown query parameter {key!r}{did_you_mean(key, known)}; this model takes {takes}")


async def _request_inputs(request: Request, w: ModelWorker, limits: Limits, schema: type[BaseModel]):
    """(raw inputs: texts or file bytes, the JSON body parsed by `schema` or None) from a predict or
    explain request's body."""
    modality = w.predictor.modality
    ctype = _content_type(request)
    body = await _read_body(request, limits.max_body)
    if not body:
        raise ApiError(400, "the body is empty: send " + ('{"inputs": ["a text"]} as application/json' if modality == "text"
                                                          else f"the {modality} file (or several as multipart/form-data)"))
    parsed = None
    if ctype == "application/json":
        if modality != "text":
            raise ApiError(415, f"model {w.name!r} takes {modality} files: send them as multipart/form-data or as the "
                                f"raw body ({', '.join(RAW_TYPES[modality][:2])}, application/octet-stream)")
        try:
            parsed = schema.model_validate_json(body)
        except ValidationError as err:
            if any(e["type"] == "json_invalid" for e in err.errors()):
                raise ApiError(400, f"the body is not valid JSON: {err.errors()[0]['msg']}") from None
            raise ApiError(422, "the request does not fit the schema: " + _schema_errors(err.errors(), schema.model_fields)) from None
        inputs = parsed.inputs
    elif ctype == "multipart/form-data":
        inputs = await _multipart(request, body, modality, limits)
    elif modality == "text" and ctype == "text/plain":
        inputs = [_decode_text(body)]
    elif modality != "text" and (ctype in RAW_TYPES[modality] or ctype == "application/octet-stream"):
        inputs = [body]
    else:
        wanted = ("application/json, text/plain or multipart/form-data" if modality == "text" else
                  f"multipart/form-data, {', '.join(RAW_TYPES[modality])} or application/octet-stream")
        raise ApiError(415, f"model {w.name!r} cannot take {ctype or 'a body without Content-Type'}: send {wanted}")
    if not inputs:
        raise ApiError(422, "the request has no inputs: send at least one")
    if len(inputs) > limits.max_inputs:
        raise ApiError(413, f"the request has {len(inputs)} inputs; this server takes at most {limits.max_inputs} at once")
    for text in inputs:
        if isinstance(text, str) and len(text) > limits.max_text:
            raise ApiError(413, f"a text has {len(text)} characters; this server takes at most {limits.max_text}")
    return inputs, parsed


async def _multipart(request: Request, body: bytes, modality: str, limits: Limits) -> list:
    """Files (image/audio models) or text fields (text models), in order; nothing is kept on disk
    under the names the client gave."""
    async def stream():
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=limits.max_inputs,
                                     max_fields=limits.max_inputs, max_part_size=limits.max_body).parse()
    except MultiPartException as err:
        if err.message.startswith("Too many"):
            raise ApiError(413, f"the request has too many parts; this server takes at most {limits.max_inputs} inputs "
                                "at once") from None
        raise ApiError(400, f"the multipart body cannot be read: {err.message}") from None
    try:
        inputs = []
        for _, value in form.multi_items():
            if isinstance(value, str):
                if modality == "text":
                    inputs.append(value)
            elif modality != "text":
                inputs.append(await value.read())
            else:
                inputs.append(_decode_text(await value.read()))
        return inputs
    finally:
        await form.close()


def _decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the text is not UTF-8") from None


def _schema_errors(errors, fields=()) -> str:
    from grove.errors import did_you_mean

    parts = []
    for e in errors[:3]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key {where!r}{did_you_mean(where, fields)}")
        else:
            parts.append(f"{where}: {e['msg']}" if where else e["msg"])
    return "; ".join(parts)


# -- the gate every request passes: draining, in-flight count, metrics ---------------------------
class Gate:
    """Pure ASGI middleware (it sees a streamed response to its end): refuses new requests with
    503 while draining, counts requests in flight, and records each one's status and latency."""

    def __init__(self, app, state: ServerState, metrics: "Metrics"):
        self.app, self.state, self.metrics = app, state, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        refusal, w = None, None
        if self.state.draining and path not in ("/healthz", "/readyz"):
            refusal = "the server is shutting down: send the request to another instance"
        elif path.startswith("/v1/models/") and path.endswith(("/predict", "/explain")):
            # A full queue refuses before the body is read or the request routed: overload costs
            # little, so the server keeps its throughput for the requests it takes.
            w = self.state.workers.get(path[len("/v1/models/"):].rpartition("/")[0])
            if w is not None and w.full:
                refusal = f"model {w.name!r} has {w.depth} inputs waiting (queue size {w.queue_size}): retry shortly"
        if refusal is not None:
            self.metrics.observe(scope, 503, 0.0, route=path if w is not None else None)
            return await error(503, refusal, **{"Retry-After": RETRY_AFTER})(scope, receive, send)
        status = 500
        start = time.perf_counter()

        async def send_and_watch(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.state.in_flight += 1
        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            self.state.in_flight -= 1
            self.metrics.observe(scope, status, time.perf_counter() - start)


class Metrics:
    """Prometheus metrics in the server's own registry."""

    def __init__(self, state: ServerState):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # no *_created series: they double the output and no dashboard reads them
        self.registry = CollectorRegistry()
        self.requests = Counter("grove_requests", "HTTP requests by route and status code",
                                ["route", "code"], registry=self.registry)
        self.latency = Histogram("grove_request_seconds", "Time to answer a request, to its last byte", ["route"],
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
                                 registry=self.registry)
        batch = Histogram("grove_batch_size", "Inputs per forward pass", ["model"],
                          buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        depth = Gauge("grove_queue_depth", "Inputs waiting or being explained, plus generations under way", ["model"],
                      registry=self.registry)
        for name, w in state.workers.items():
            w.on_batch = batch.labels(model=name).observe
            depth.labels(model=name).set_function(lambda w=w: w.depth)

    def observe(self, scope, status: int, seconds: float, route: str | None = None) -> None:
        # The route's template (/v1/models/{name}/predict), so unknown paths cannot grow the label set.
        label = route or getattr(scope.get("route"), "path", None) or (
            "/static" if scope["path"].startswith("/static/") else "other")
        self.requests.labels(route=label, code=str(status)).inc()
        self.latency.labels(route=label).observe(seconds)

    def render(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()


def _add_model_routes(app: FastAPI, w: ModelWorker, predict, generate, guarded: list, unauthorized: dict) -> None:
    """POST /v1/models/NAME/predict or /generate, with the schema of what this model takes."""
    name, p = w.name, w.predictor
    what = {"image": "image", "audio": "audio clip", "text": "text"}[p.modality]
    tags = [name]
    if p.task == "lm":
        @app.post(f"/v1/models/{name}/generate", response_model=GenerateResponse, dependencies=guarded, tags=tags,
                  operation_id=f"generate_{name}", summary=f"Continue a prompt with {name}",
                  responses={**ERRORS, **unauthorized, 200: {
                      "content": {"text/event-stream": {"schema": {"type": "string"}}},
                      "description": 'the continuation; with "stream": true, server-sent events '
                                     '`data: {"text": piece}`, then `event: done` with the whole text'}})
        async def generate_route(body: GenerateBody, request: Request):
            return await generate(name, body, request)

        return
    ctc = p.task == "ctc"
    if ctc:
        async def predict_route(request: Request, beam_width: int = Query(8, ge=0, le=64,
                                                                         description="beam search width (0: greedy)")):
            return await predict(name, request, 1, beam_width)
    else:
        async def predict_route(request: Request, top_k: int = Query(5, ge=1, le=1000, description=(
                "labels per input, most probable first" + (" (a JSON body gives its own)" if p.modality == "text" else "")))):
            return await predict(name, request, top_k, 0)

    app.post(f"/v1/models/{name}/predict", response_model=PredictResponse, response_model_exclude_none=True,
             dependencies=guarded, tags=tags, operation_id=f"predict_{name}",
             summary=f"{'Transcribe' if ctc else 'Classify'} {what}s with {name}",
             description=_predict_description(p), responses={**ERRORS, **unauthorized},
             openapi_extra={"requestBody": _predict_body_schema(p.modality)})(predict_route)


def _predict_description(p) -> str:
    if p.modality == "text":
        return 'JSON `{"inputs": ["a text", ...], "top_k": 5}`, one text/plain text, or multipart text fields.'
    return (f"{p.modality.capitalize()} files as multipart/form-data (any number of parts), or one file as the raw "
            "body. Files are decoded in memory; their names are ignored.")


def _predict_body_schema(modality: str) -> dict:
    if modality == "text":
        return {"required": True, "content": {
            "application/json": {"schema": PredictBody.model_json_schema()},
            "text/plain": {"schema": {"type": "string", "minLength": 1, "pattern": r"\S"}},
            "multipart/form-data": {"schema": {"type": "object", "required": ["text"], "properties": {
                "text": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1, "pattern": r"\S"}}}}},
        }}
    binary = {"schema": {"type": "string", "format": "binary"}}
    content = {"multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
        "file": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}}}}},
        **{t: binary for t in RAW_TYPES[modality]}, "application/octet-stream": binary}
    return {"required": True, "content": content}


def _add_explain_route(app: FastAPI, w: ModelWorker, explain, methods: list[str], guarded: list,
                       unauthorized: dict) -> None:
    """POST /v1/models/NAME/explain: what predict takes (a language model: prompts, as JSON),
    with the explanation methods that apply to this model."""
    name, p = w.name, w.predictor
    given = " (a JSON body gives its own)" if p.modality == "text" else ""
    # Any other method is refused (400) by grove.explain, with the reason and the methods that apply.
    method_query = Query("auto", description=METHOD_HELP + given, json_schema_extra={"enum": methods})
    if p.task == "lm":
        async def explain_route(request: Request):
            return await explain(name, request, "auto", None)
    elif p.task == "ctc":
        async def explain_route(request: Request, method: str = method_query):
            return await explain(name, request, method, None)
    else:
        async def explain_route(request: Request, method: str = method_query, target: str | None = Query(
                None, description="the label to explain, by default the predicted one" + given)):
            return await explain(name, request, method, target)

    explained = {"lm": "the prompt's next token", "ctc": "the transcript", "classification": "the prediction"}[p.task]
    body = _predict_body_schema(p.modality)
    if p.modality == "text":
        schema = ExplainBody.model_json_schema()
        schema["properties"]["method"]["enum"] = methods
        body["content"] = {"application/json": {"schema": schema}} if p.task == "lm" else {
            **body["content"], "application/json": {"schema": schema}}
    app.post(f"/v1/models/{name}/explain", response_model=ExplainResponse, response_model_exclude_none=True,
             dependencies=guarded, tags=[name], operation_id=f"explain_{name}", summary=f"Explain {explained} of {name}",
             description=_explain_description(p), responses={**ERRORS, **unauthorized},
             openapi_extra={"requestBody": body})(explain_route)


def _explain_description(p) -> str:
    if p.task == "lm":
        takes = 'JSON `{"inputs": ["a prompt", ...], "method": "auto", "target": "a token"}`'
    elif p.modality == "text":
        takes = ('JSON `{"inputs": ["a text", ...], "method": "auto", "target": "a label"}`, one text/plain text, '
                 "or multipart text fields")
    else:
        takes = f"{p.modality.capitalize()} files as multipart/form-data, or one file as the raw body"
    return (f"{takes}. Each input's attributions (tokens for text, a picture for images and audio) and their deletion "
            "score. An explanation costs tens of forward passes: a request holds a few inputs (413 past the limit).")
