"""FastAPI + uvicorn + PyTorch peer for `make bench-lm`: POST /complete on the same character-level
language models (kind "language_model") as dlserve, from the same TorchScript step files.

Written the way a Python text-generation endpoint is commonly written:
  * the models (every models/<name> whose config.toml says kind = "language_model") are loaded once at
    start-up (lifespan) with torch.jit.load, put in eval mode and run one warm-up step;
  * torch.set_num_threads(BENCH_THREADS, default 1: the benchmark gives each server one core) and
    torch.set_num_interop_threads(1);
  * one uvicorn worker (uvloop + httptools, i.e. `uvicorn[standard]`);
  * one request = one Python decoding loop, one sequence per forward (batch 1), each step under
    torch.no_grad(); no batching across requests (FastAPI has none);
  * non-streamed answers are computed inline in the `async def` handler (as bench/peers/fastapi_app.py
    does); streamed answers (`"stream": true`) are a StreamingResponse over an async generator that runs
    one step, yields that token's Server-Sent Event and then `await asyncio.sleep(0)`, so that concurrent
    streams take turns token by token on the event loop instead of one stream running to its end first.

Decoding, the same as dlserve's (src/kinds/, `language_model`), so that greedy answers are identical:
state = zeros [1, state_size]; feed bos, then each prompt character (one step each, tokens [1,1] int64);
the logits after the last prompt token give the first generated token; only single-character tokens
and eos are candidates (others, and non-finite logits, are masked out); temperature 0 = argmax (lowest id
on ties, torch.argmax's rule), else softmax(logits / temperature) cut to top_k, then to the smallest set
whose probability reaches top_p, sampled with a torch.Generator seeded by `seed` (so sampled texts are
reproducible here but not equal to dlserve's, whose generator differs); each generated token is fed
next. A generation stops at eos (finish_reason "stop", eos not in the text but counted in `tokens`), at
a stop string (the text is cut before it, "stop"), or after max_tokens tokens ("length").

Streaming: one `event: token` per generated token (eos included, with empty text), `data:
{"index": 0, "text": chunk}`; text that could be the start of a stop string is held back (an empty
chunk) and released with a later token; the last event is `event: done` with the whole non-streamed
answer as data; a failure while streaming is `event: error` with `{"error": {...}}`.

The body subset the peer takes: model, prompt, max_tokens, temperature, top_k, top_p, stop, seed, stream,
and n = 1 only. Errors are dlserve's shape, `{"error": {"type", "message", "field"}}`.

Run:  BENCH_MODELS_DIR=models uvicorn --app-dir bench/peers lm_app:app --port 8000
"""
import asyncio
import json
import os
import secrets
import sys
from contextlib import asynccontextmanager
from typing import List, Optional

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

common.set_threads()
DEVICE = torch.device(common.DEVICE_NAME)
MODELS_DIR = common.MODELS_DIR

MODELS = {}  # name -> LanguageModel
DEFAULT = None  # the model a request without "model" gets


class LanguageModel:
    """One loaded step module and its [language_model] table."""

    def __init__(self, name, model_dir):
        cfg, _ = common.load_config(model_dir)
        path, self.version = common.latest_model_file(model_dir)
        self.name, self.cfg = name, cfg
        lm = cfg["language_model"]
        self.vocab = list(lm["vocab"])
        self.bos, self.eos = self.vocab.index(lm["bos"]), self.vocab.index(lm["eos"])
        # prompts are matched character by character against the single-character tokens, and only
        # those and eos may be drawn (bos, and any other longer token, never are)
        self.char_ids = {t: i for i, t in enumerate(self.vocab) if len(t) == 1}
        self.drawable = torch.tensor([len(t) == 1 or i == self.eos for i, t in enumerate(self.vocab)])
        unknown = lm.get("unknown", "refuse")
        self.unknown = None if unknown == "refuse" else self.vocab.index(unknown)
        self.state_size = int(lm["state_size"])
        self.max_tokens = int(lm["max_tokens"])
        self.default_max_tokens = int(lm.get("default_max_tokens", self.max_tokens))
        self.max_prompt_chars = int(lm.get("max_prompt_chars", 1 << 30))
        self.module = torch.jit.load(path, map_location=DEVICE).eval()
        self.default = bool(cfg.get("default_for_kind", False))

    def step(self, token, state):
        """One forward: token id, state [1, S] -> (logits [V] on the CPU, new state)."""
        with torch.no_grad():
            logits, state = self.module(torch.tensor([[token]], dtype=torch.int64, device=DEVICE), state)
        return logits[0].cpu(), state

    def encode(self, prompt):
        ids = []
        for i, ch in enumerate(prompt):
            t = self.char_ids.get(ch, self.unknown)
            if t is None:
                raise common.BadRequest(f"prompt character {ch!r} at {i} is not in the vocabulary")
            ids.append(t)
        return ids


class CompleteRequest(BaseModel):
    model: Optional[str] = None
    prompt: str = ""
    max_tokens: Optional[int] = None
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    stop: Optional[List[str]] = None
    seed: Optional[int] = None
    n: int = 1
    stream: bool = False


class Generation:
    """One request's decoding loop: `tokens()` yields each generated token's stream chunk, and then
    `answer()` is the non-streamed answer."""

    def __init__(self, lm, req):
        self.lm, self.req = lm, req
        self.prompt_ids = lm.encode(req.prompt)
        self.max_tokens = lm.default_max_tokens if req.max_tokens is None else req.max_tokens
        self.seed = req.seed if req.seed is not None else secrets.randbits(53)  # JSON-safe, as dlserve's
        self.gen = None
        if req.temperature > 0:
            self.gen = torch.Generator().manual_seed(self.seed)
        self.stops = [s for s in (req.stop or [])]
        self.text, self.emitted, self.count, self.finish = "", 0, 0, None

    def pick(self, logits):
        r = self.req
        ok = self.lm.drawable & torch.isfinite(logits)
        if not bool(ok.any()):
            return self.lm.eos
        logits = logits.float().masked_fill(~ok, float("-inf"))
        if r.temperature == 0:
            return int(torch.argmax(logits))  # the first maximum: the lowest id on ties
        probs = torch.softmax(logits / r.temperature, dim=-1)
        if 0 < r.top_k < probs.numel():
            kth = torch.topk(probs, r.top_k).values[-1]
            probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
        if r.top_p < 1.0:
            p, idx = torch.sort(probs, descending=True)
            cum = torch.cumsum(p, 0) / p.sum()
            keep = (cum - p / p.sum()) < r.top_p  # the smallest prefix whose mass reaches top_p
            probs = torch.zeros_like(probs).scatter(0, idx, torch.where(keep, p, torch.zeros_like(p)))
        return int(torch.multinomial(probs, 1, generator=self.gen))

    def _held(self):
        """Characters at the end of the unsent text that could start a stop string (held back)."""
        tail = len(self.text) - self.emitted
        best = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, tail), best, -1):
                if self.text.endswith(s[:k]):
                    best = k
                    break
        return best

    def _chunk(self, upto):
        c = self.text[self.emitted:upto]
        self.emitted = upto
        return c

    def tokens(self):
        lm = self.lm
        state = torch.zeros(1, lm.state_size, dtype=torch.float32, device=DEVICE)
        logits = None
        for t in [lm.bos] + self.prompt_ids:
            logits, state = lm.step(t, state)
        while True:
            tok = self.pick(logits)
            self.count += 1
            if tok == lm.eos:
                self.finish = "stop"
                yield self._chunk(len(self.text))
                return
            before = len(self.text)
            self.text += lm.vocab[tok]
            cut = None
            for s in self.stops:
                at = self.text.find(s, max(0, before - len(s) + 1))
                if at >= 0 and (cut is None or at < cut):
                    cut = at
            if cut is not None:
                self.text = self.text[:cut]
                self.finish = "stop"
                yield self._chunk(cut)
                return
            if self.count >= self.max_tokens:
                self.finish = "length"
                yield self._chunk(len(self.text))
                return
            yield self._chunk(len(self.text) - self._held())
            logits, state = lm.step(tok, state)

    def answer(self):
        prompt_tokens = 1 + len(self.prompt_ids)
        return {"model": self.lm.name, "version": self.lm.version, "seed": self.seed,
                "choices": [{"index": 0, "text": self.text, "finish_reason": self.finish, "tokens": self.count}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": self.count,
                          "total_tokens": prompt_tokens + self.count}}


@asynccontextmanager
async def lifespan(app):
    global DEFAULT
    for name in sorted(os.listdir(MODELS_DIR)):
        d = os.path.join(MODELS_DIR, name)
        if not os.path.exists(os.path.join(d, "config.toml")):
            continue
        cfg, _ = common.load_config(d)
        if cfg.get("kind") != "language_model":
            continue
        lm = LanguageModel(name, d)
        lm.step(lm.bos, torch.zeros(1, lm.state_size, device=DEVICE))  # one warm-up step, as dlserve does
        MODELS[name] = lm
        if DEFAULT is None or lm.default:
            DEFAULT = name
    yield


app = FastAPI(title="fastapi-lm-peer", lifespan=lifespan)


def error(status, message, field=None, kind="invalid_request"):
    body = {"type": kind, "message": message}
    if field:
        body["field"] = field
    return JSONResponse({"error": body}, status_code=status)


def sse(event, data):
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


@app.get("/health/ready")
async def ready():
    return {"status": "ready", "models": sorted(MODELS)}


@app.post("/complete")
async def complete(request: Request):
    try:
        req = CompleteRequest.model_validate_json(await request.body())
    except ValidationError as e:
        return error(422, str(e))
    name = req.model or DEFAULT
    if name not in MODELS:
        return error(404, f"no language model {name!r}", "model", "model_not_found")
    lm = MODELS[name]
    if req.n != 1:
        return error(422, "the peer answers n = 1 only", "n")
    if req.max_tokens is not None and not 1 <= req.max_tokens <= lm.max_tokens:
        return error(422, f"max_tokens must be in [1, {lm.max_tokens}]", "max_tokens")
    if not req.temperature >= 0:
        return error(422, "temperature must be >= 0", "temperature")
    if req.top_k < 0:
        return error(422, "top_k must be >= 0", "top_k")
    if not 0 < req.top_p <= 1:
        return error(422, "top_p must be in (0, 1]", "top_p")
    if any(s == "" for s in req.stop or []):
        return error(422, "stop strings must not be empty", "stop")
    if len(req.prompt) > lm.max_prompt_chars:
        return error(422, f"prompt longer than {lm.max_prompt_chars} characters", "prompt")
    try:
        g = Generation(lm, req)
    except common.BadRequest as e:
        return error(422, str(e), "prompt")
    if not req.stream:
        for _ in g.tokens():
            pass
        return JSONResponse(g.answer())

    async def events():
        try:
            for chunk in g.tokens():
                yield sse("token", {"index": 0, "text": chunk})
                await asyncio.sleep(0)  # let the other streams' steps run between this one's tokens
            yield sse("done", g.answer())
        except Exception as e:  # noqa: BLE001 (reported in the stream: the status line is already sent)
            yield sse("error", {"error": {"type": "internal", "message": str(e)}})

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
