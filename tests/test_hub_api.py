"""The hub's HTTP API against a running server (issue 11): exploration, download,
pull and publish through pas.transfer, OpenAPI, and the security checks
(tokens, private repositories, traversal, hostile queries and uploads)."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from pas import formats  # noqa: E402
from pas.errors import BadInput, NotFound  # noqa: E402
from pas.hub import sample, wire  # noqa: E402
from pas.hub.config import load_config, parse_config  # noqa: E402
from pas.hub.errors import Forbidden, Unauthorized  # noqa: E402
from pas.hub.remote import open_remote, publish, pull  # noqa: E402
from pas.records import CHUNK, TENSOR, VERSION  # noqa: E402
from pas.repo import Repository  # noqa: E402
from pas.snapshot import Snapshot, Tensor  # noqa: E402

ALICE, BOB, EVE = "alice-token-0123456789", "bob-token-0123456789ab", "eve-token-0123456789abc"
HOSTILE = '<script>alert("x")</script>'


def hub_config(root: Path, **limits) -> dict:
    return {"limits": {"max_upload_bytes": 4 << 20, **limits},
            "users": {"alice": {"token": ALICE}, "bob": {"token": BOB}, "eve": {"token": EVE}},
            "repos": {"models": {"path": str(root / "models"), "owners": ["alice"]},
                      "secret": {"path": str(root / "secret"), "read": "private", "readers": ["bob"],
                                 "owners": ["alice"]},
                      "pub": {"path": str(root / "pub"), "owners": ["alice"]}}}


def big_version(repo, name="plain", seed=1, message=HOSTILE):
    """A plain pas version with tensors big enough to be cut into chunks (1 MiB)."""
    rng = np.random.default_rng(seed)
    s = Snapshot(metadata={"note": HOSTILE})
    s.add(Tensor.from_array("embed.weight", rng.standard_normal((700, 512)).astype(np.float32)))
    s.add(Tensor.from_array("head.bias", np.arange(7, dtype=np.int64)))
    return repo.archive_snapshot(s, name, message=message).version_id


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    ids = sample.build(root / "models")
    with Repository.open(root / "models", write=True) as r:
        ids["plain"] = big_version(r)
    with Repository.init(root / "secret") as r:
        ids["secret"] = big_version(r, "hidden", seed=3, message="private")
    Repository.init(root / "pub").close()
    cfg = parse_config(hub_config(root))
    with sample.Server(cfg) as url:
        yield {"url": url, "root": root, "ids": ids, "http": httpx.Client(base_url=url, timeout=30)}


def err(resp, status, code=None):
    """The response is the hub's JSON error with this status (and code)."""
    assert resp.status_code == status, resp.text[:500]
    e = resp.json()["error"]
    assert e["status"] == status and e["message"]
    if code:
        assert e["code"] == code
    return e["message"]


def auth(token):
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------- exploration
def test_openapi_spec_lists_the_endpoints(hub):
    spec = hub["http"].get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    want = {"/api/repos": "get", "/api/repos/{repo}/models": "get", "/api/repos/{repo}/search": "get",
            "/api/repos/{repo}/versions/{ref}": "get", "/api/repos/{repo}/versions/{ref}/lineage": "get",
            "/api/repos/{repo}/diff": "get", "/api/repos/{repo}/versions/{ref}/safetensors": "get",
            "/api/repos/{repo}/refs": "post", "/api/repos/{repo}/keys": "get",
            "/api/repos/{repo}/objects/get": "post", "/api/repos/{repo}/objects/has": "post",
            "/api/repos/{repo}/objects": "post", "/api/repos/{repo}/config": "get", "/api/limits": "get"}
    for path, method in want.items():
        assert method in paths[path], path
    assert "get" in paths["/api/repos/{repo}/refs"]
    params = {p["name"] for p in paths["/api/repos/{repo}/search"]["get"]["parameters"]}
    assert {"repo", "q", "dql"} <= params
    assert "application/octet-stream" in paths["/api/repos/{repo}/versions/{ref}/safetensors"]["get"]["responses"]["200"]["content"]
    assert wire.MEDIA_TYPE in paths["/api/repos/{repo}/objects"]["post"]["requestBody"]["content"]
    assert not any(p == "/" or p.startswith("/r/") for p in paths)      # pages are not API


def test_repos_models_search_and_dql(hub):
    h, ids = hub["http"], hub["ids"]
    repos = h.get("/api/repos").json()
    assert [r["name"] for r in repos] == ["models", "pub"]        # secret is private
    assert [r["name"] for r in h.get("/api/repos", headers=auth(BOB)).json()] == ["models", "pub", "secret"]
    assert repos[0]["models"] == 3 and repos[0]["versions"] == 5
    models = h.get("/api/repos/models/models").json()
    assert [m["name"] for m in models["models"]] == ["digits", "digits-ft", "plain"]
    rows = h.get("/api/repos/models/search", params={"q": "FROZEN"}).json()
    assert [r["id"] for r in rows] == [ids["digits-ft@1"]] and rows[0]["matched"] == ["hyperparams"]
    rows = h.get("/api/repos/models/search", params={"dql": 'select m where m.name like "digits-%"'}).json()
    assert {r["id"] for r in rows} == {ids["digits-ft@0"], ids["digits-ft@1"]}
    rows = h.get("/api/repos/models/search", params={"dql": 'select m where m.hparams.lr < 0.05'}).json()
    assert [r["id"] for r in rows] == [ids["digits-ft@1"]]
    assert "only select" in err(h.get("/api/repos/models/search", params={
        "dql": 'construct m2 from m mutate m2["relu1"].delete'}), 400, "bad_input")
    assert "only select" in err(h.get("/api/repos/models/search", params={
        "dql": 'select m from (construct n from k mutate n["relu1"].delete)'}), 400)
    err(h.get("/api/repos/models/search", params={"dql": "select m where"}), 400, "bad_input")
    err(h.get("/api/repos/models/search"), 400)
    err(h.get("/api/repos/models/search", params={"q": "a", "dql": "select m"}), 400)


def test_version_details_lineage_and_diff(hub):
    h, ids = hub["http"], hub["ids"]
    v = h.get("/api/repos/models/versions/digits-ft").json()
    assert v["id"] == ids["digits-ft@1"] and v["parent"] == ids["digits-ft@0"]
    assert [n["type"] for n in v["network_def"]["nodes"]][:3] == ["Input", "Conv2d", "ReLU"]
    assert v["hyperparams"]["lr"] == 0.02 and [f["name"] for f in v["files"]] == ["README.md"]
    t = {r["name"]: r for r in v["tensors"]}
    assert t["fc1.weight"]["shape"] == [32, 200] and t["fc1.weight"]["bytes"] == 32 * 200 * 4
    assert all(r["stored_bytes"] > 0 for r in v["tensors"]) and v["stored_sizes"]
    assert t["fc2.weight"]["encoding"] in ("whole", "xor", "sub")
    assert v["series"]["accuracy"][0] == [0, pytest.approx(0.85 + 0.1 * (1 / 6) ** 0.5, abs=1e-3)]
    big = h.get(f"/api/repos/models/versions/{ids['plain'][:10]}").json()
    assert big["network"] is None and big["metadata"] == {"note": HOSTILE}
    e = {r["name"]: r for r in big["tensors"]}["embed.weight"]
    assert e["chunks"] >= 2 and 0 < e["stored_bytes"] <= e["bytes"] * 1.01
    lin = h.get("/api/repos/models/versions/digits-ft/lineage").json()
    assert [x["derived"] for x in lin["ancestry"]] == [ids["digits-ft@1"], ids["digits-ft@0"], ids["digits@2"],
                                                       ids["digits@1"]]
    d = h.get("/api/repos/models/diff", params={"a": "digits", "b": "digits-ft"}).json()
    assert [c["name"] for c in d["changed"]] == ["fc2.weight"] and d["unchanged"] == 5 and d["tensors_read"] == 2
    assert d["hyperparams"]["changed"]["lr"] == [0.1, 0.02] and d["network"]["same"]
    err(h.get("/api/repos/models/versions/nope"), 404, "not_found")
    err(h.get("/api/repos/models/diff", params={"a": "digits"}), 422, "invalid_request")


def test_download_is_the_retrieved_file_streamed(hub):
    h, root = hub["http"], hub["root"]
    for ref in ("plain", "digits-ft"):
        resp = h.get(f"/api/repos/models/versions/{ref}/safetensors")
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/octet-stream"
        assert "attachment" in resp.headers["content-disposition"]
        assert int(resp.headers["content-length"]) == len(resp.content)
        with Repository.open(root / "models") as r:
            out = root / f"{ref}.safetensors"
            formats.write(r.retrieve(ref), out, "safetensors")
        assert resp.content == out.read_bytes()
    err(h.get("/api/repos/models/versions/nope/safetensors"), 404)


# -------------------------------------------------------- pull and publish
def test_pull_and_publish_through_transfer(hub, tmp_path):
    url, ids, root = hub["url"], hub["ids"], hub["root"]
    with Repository.init(tmp_path / "local") as local:
        rep = pull(f"{url}/models", ["digits-ft", "plain"], local)
        assert set(rep.versions) == {ids["digits-ft@1"], ids["digits-ft@0"], ids["digits@2"], ids["digits@1"],
                                     ids["plain"]}
        assert rep.chunks >= 2 and local.verify().ok
        assert local.refs() == {"digits-ft": ids["digits-ft@1"], "plain": ids["plain"]}
        again = pull(f"{url}/r/models", ["digits-ft", "plain"], local)        # the page URL works too
        assert again.versions == [] and again.chunks == 0
        # A remote repository reads like a local one, every byte checked.
        with open_remote(f"{url}/models") as remote:
            assert remote.retrieve("plain").tensors["embed.weight"].data.tobytes() == \
                local.retrieve("plain").tensors["embed.weight"].data.tobytes()
            assert [v.hex for v in remote.log("digits-ft")][-1] == ids["digits@1"]
        # Publish: a token is needed, and the owner's.
        with pytest.raises(Unauthorized):
            publish(local, f"{url}/pub", ["plain"], token=None)
        with pytest.raises(Forbidden):
            publish(local, f"{url}/pub", ["plain"], token=BOB)
        with pytest.raises(Unauthorized):
            publish(local, f"{url}/pub", ["plain"], token="not-a-token")
        rep = publish(local, f"{url}/pub", ["digits-ft", "plain"], token=ALICE)
        assert rep.refs == {"digits-ft": ids["digits-ft@1"], "plain": ids["plain"]} and rep.chunks >= 2
        assert publish(local, f"{url}/pub", ["digits-ft", "plain"], token=ALICE).bytes == 0
        # A ref moves only forward: a new unrelated "plain" is refused unless forced.
        new = big_version(local, "plain2", seed=9, message="unrelated")
        local.set_ref("plain", bytes.fromhex(new))
        with pytest.raises(BadInput, match="not an ancestor"):
            publish(local, f"{url}/pub", ["plain"], token=ALICE)
        assert publish(local, f"{url}/pub", ["plain"], token=ALICE, force=True).refs == {"plain": new}
    with Repository.open(root / "pub") as pub:
        assert pub.verify().ok and pub.refs()["plain"] == new and pub.refs()["digits-ft"] == ids["digits-ft@1"]
    h = hub["http"]
    assert h.get("/api/repos/pub/refs").json()["plain"] == new          # the hub's reader saw its own write
    with Repository.open(root / "pub", write=True) as pub:              # and one made beside it, by pas
        pub.set_ref("latest", bytes.fromhex(ids["digits@1"]))
    assert h.get("/api/repos/pub/refs").json()["latest"] == ids["digits@1"]


# ----------------------------------------------------------------- security
def test_no_write_without_an_owners_token(hub):
    h = hub["http"]
    body = wire.encode([(CHUNK + b"\0" * 25, b"x")])
    hdr = {"Content-Type": wire.MEDIA_TYPE}
    err(h.post("/api/repos/pub/objects", content=body, headers=hdr), 401, "unauthorized")
    err(h.post("/api/repos/pub/objects", content=body, headers={**hdr, **auth(BOB)}), 403, "forbidden")
    err(h.post("/api/repos/pub/objects", content=body, headers={**hdr, **auth("x" * 30)}), 401)
    err(h.post("/api/repos/pub/objects", content=body, headers={**hdr, "Authorization": "Basic abc"}), 401)
    err(h.post("/api/repos/models/refs", json={"refs": {"digits": hub["ids"]["digits@1"]}}), 401)
    err(h.post("/api/repos/models/refs", json={"refs": {"digits": hub["ids"]["digits@1"]}}, headers=auth(EVE)), 403)
    assert h.get("/api/repos/models/refs").json()["digits"] == hub["ids"]["digits@2"]   # unchanged


def test_private_repository_is_not_readable(hub):
    h = hub["http"]
    for path in ("/api/repos/secret/refs", "/api/repos/secret/models", "/api/repos/secret/versions/hidden",
                 "/api/repos/secret/versions/hidden/safetensors", "/api/repos/secret/config"):
        err(h.get(path), 404, "not_found")
        err(h.get(path, headers=auth(EVE)), 404)          # a user who is not a reader
        assert h.get(path, headers=auth(BOB)).status_code == 200
    keys = {"keys": [(VERSION + bytes.fromhex(hub["ids"]["secret"])).hex()]}
    err(h.post("/api/repos/secret/objects/get", json=keys), 404)
    assert h.post("/api/repos/secret/objects/get", json=keys, headers=auth(BOB)).status_code == 200
    page = h.get("/r/secret", headers={"Accept": "text/html"})
    assert page.status_code == 404 and "text/html" in page.headers["content-type"] and "hidden" not in page.text
    with pytest.raises(NotFound):
        open_remote(f"{hub['url']}/secret")


@pytest.mark.parametrize("path", [
    "/api/repos/..%2f..%2fetc/refs", "/api/repos/models/versions/..%2F..%2Fconfig.json",
    "/api/repos/models/versions/..%2F..%2F..%2Fetc%2Fpasswd/safetensors", "/api/repos/%2e%2e/refs",
    "/r/..%2Fmodels/v/digits", "/api/repos/models/../../etc/passwd", "/static/..%2f..%2fpyproject.toml",
    "/api/repos/models/keys?prefix=2e2e2f", "/api/repos/.pas/refs"])
def test_no_path_traversal(hub, path):
    resp = hub["http"].get(path)
    assert resp.status_code in (400, 404, 422), (path, resp.status_code)
    assert resp.json()["error"]["message"]
    assert "repo_id" not in resp.text and "root:" not in resp.text


def test_hostile_query_strings(hub):
    h = hub["http"]
    err(h.get("/api/repos/models/search", params={"q": "a" * 5000}), 400, "bad_input")
    err(h.get("/api/repos/models/search", params={"q": "a\x00b"}), 400)
    err(h.get("/api/repos/models/search", params={"q": "a" * 9000}), 414)
    err(h.get("/api/repos/models/search", params={"dql": "select m where " + "(" * 300 + "m.name = 'a'" + ")" * 300}),
        400)
    err(h.get("/api/repos/models/search", params={"dql": "select m from \"saved\""}), 400)
    err(h.get("/api/repos/models/keys", params={"prefix": "zz"}), 400)
    err(h.get("/api/repos/models/keys", params={"prefix": "00"}), 400)
    err(h.get("/api/repos/models/keys", params={"prefix": "76", "limit": 10 ** 9}), 422)
    err(h.post("/api/repos/models/objects/get", json={"keys": ["00" * 26]}), 400)
    err(h.post("/api/repos/models/objects/get", json={"keys": ["ab"] * 2000}), 400)
    err(h.post("/api/repos/models/objects/get", content=b"{not json", headers={"Content-Type": "application/json"}),
        422)
    huge = json.dumps({"keys": ["ab" * 1000] * 2500}).encode()                # 5 MB of JSON, over the 4 MiB cap
    err(h.post("/api/repos/models/objects/get", content=huge, headers={"Content-Type": "application/json"}), 413)
    err(h.post("/api/repos/models/objects/get", content=iter([huge[i:i + 65536] for i in range(0, len(huge), 65536)]),
               headers={"Content-Type": "application/json"}), 413)            # chunked: no length announced
    # Text that looks like markup is escaped wherever a page shows it.
    for page in ("/r/models/v/plain", "/r/models", f"/r/models?q={HOSTILE}"):
        html = h.get(page, headers={"Accept": "text/html"}).text
        assert HOSTILE not in html and "&lt;script&gt;" in html, page


def _upload(h, items, token=ALICE):
    return h.post("/api/repos/pub/objects", content=wire.encode(items) if isinstance(items, list) else items,
                  headers={"Content-Type": wire.MEDIA_TYPE, **auth(token)})


def test_hostile_uploads_are_refused_and_store_nothing(hub):
    h, root = hub["http"], hub["root"]
    with Repository.open(root / "secret") as r:       # objects pub has never seen
        v = r.version("hidden")
        rec = v.tensors[0].object
        rec_value = r.store.get(TENSOR + rec)
        from pas.reader import parse_record
        chunk = parse_record(rec, rec_value).addrs[0][0]
        chunk_value = r.store.get(CHUNK + chunk)
        manifest = r.store.get(VERSION + v.id)
    with Repository.open(root / "pub") as pub:
        before = sum(1 for _ in pub.store.list_prefix(b""))
    err(_upload(h, b"PAS1" + b"\xff" * 4096 * 1024 + b"x" * 1024), 413, "too_large")      # over the 4 MiB cap
    err(_upload(h, b"garbage"), 400, "bad_input")
    err(_upload(h, b"PAS1\x00\x05ab"), 400)                                                # truncated
    err(_upload(h, b"PAS1" + struct.pack(">H", 26) + CHUNK + b"\0" * 25 + struct.pack(">I", 10 ** 9)), 400)
    damaged = bytearray(chunk_value)
    damaged[len(damaged) // 2] ^= 1
    err(_upload(h, [(CHUNK + chunk, bytes(damaged))]), 400)                               # fails its check
    err(_upload(h, [(CHUNK + bytes([chunk[0] ^ 1]) + chunk[1:], chunk_value)]), 400)      # under another address
    err(_upload(h, [(TENSOR + rec, rec_value)]), 400)                                     # its chunks are missing
    err(_upload(h, [(VERSION + b"\1" * 16, manifest)]), 400)                              # not its id
    err(_upload(h, [(VERSION + v.id, manifest)]), 400)                                    # its records are missing
    err(_upload(h, [(b"r" + b"main", b"x")]), 400)                                        # refs go through /refs
    err(_upload(h, [(b"x" * 17, b"x")]), 400)                                             # not a key
    err(_upload(h, [(CHUNK + b"\0" * 25, None)]), 400)
    err(_upload(h, b"PAS1" + b"".join(struct.pack(">H", 26) + CHUNK + struct.pack(">25sI", i.to_bytes(25, "big"), 0)
                                      for i in range(1100))), 400)                        # over max_batch
    err(h.post("/api/repos/pub/refs", json={"refs": {"../../x": "00" * 16}}, headers=auth(ALICE)), 400)
    err(h.post("/api/repos/pub/refs", json={"refs": {"x": "00" * 16}}, headers=auth(ALICE)), 404)
    err(h.post("/api/repos/pub/refs", json={"refs": {"x": "nothex"}}, headers=auth(ALICE)), 400)
    err(h.post("/api/repos/pub/refs", json={"refs": {}}, headers=auth(ALICE)), 400)
    with Repository.open(root / "pub") as pub:
        assert sum(1 for _ in pub.store.list_prefix(b"")) == before
    # The same chunk, intact, is accepted (and is then present).
    ok = _upload(h, [(CHUNK + chunk, chunk_value)])
    assert ok.status_code == 200 and ok.json()["stored"]["chunks"] + ok.json()["present"] == 1


def test_rate_limit_and_config_errors(tmp_path):
    sample.build(tmp_path / "r")
    cfg = load_config(None, [f"one={tmp_path / 'r'}"])
    cfg.limits.rate, cfg.limits.burst = 0.5, 3
    with sample.Server(cfg) as url:
        codes = [httpx.get(f"{url}/api/repos").status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
        resp = httpx.get(f"{url}/api/repos/one/refs")
        assert int(resp.headers["retry-after"]) >= 1 and err(resp, 429, "rate_limited")
    for bad, match in [({"repos": {"../x": {"path": "p"}}}, "repository"),
                       ({"users": {"a": {"token": "short"}}}, "token"),
                       ({"repos": {"x": {"path": "p", "owners": ["ghost"]}}}, "unknown users"),
                       ({"repos": {"x": {"path": "p", "read": "everyone"}}}, "public"),
                       ({"limits": {"rate": -1}}, "positive"), ({"other": {}}, "unknown")]:
        with pytest.raises(BadInput, match=match):
            parse_config(bad)


def test_pas_serve_command(tmp_path):
    bad = tmp_path / "hub.toml"
    bad.write_text("[repos.x]\npath = 1\n")
    run = lambda *a: subprocess.run([sys.executable, "-m", "pas.cli", *a], capture_output=True, text=True,  # noqa: E731
                                    timeout=60)
    r = run("serve", "--config", str(bad))
    assert r.returncode == 4 and "needs a path" in r.stderr
    r = run("serve", str(tmp_path / "nothing"))
    assert r.returncode == 10 and "no pas repository" in r.stderr
    assert "--config" in run("serve", "--help").stdout
    # `pas` itself does not import the web stack.
    out = subprocess.run([sys.executable, "-c", "import sys, pas.cli; print(sorted(m for m in sys.modules "
                          "if m.split('.')[0] in ('fastapi', 'uvicorn', 'starlette', 'jinja2')))"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_load_script_smoke():
    """bench/hub_load.py, tiny: a real server process, every kind of request answered."""
    from bench.hub_load import run
    res = run(clients=2, seconds=1.0, max_requests=60)
    assert res["errors"] == 0 and res["requests"] >= 5
    assert all(v["requests"] >= 1 for v in res["by_kind"].values()) and res["download_MB_per_s"] > 0


def test_svg_layout_and_escaping():
    from pas.hub import render_svg
    layer = render_svg.layers_of(["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("a", "c"), ("c", "d"), ("d", "b")])
    assert layer["a"] == 0 and layer["b"] >= 1 and layer["d"] > layer["c"]           # a cycle does not hang it
    svg = render_svg.graph([{"id": "x", "label": HOSTILE, "sub": "&"}, {"id": "y", "label": "y"}], [("x", "y")],
                           link=lambda n: f'/v/{n["id"]}"onclick="x')
    assert HOSTILE not in svg and "&lt;script&gt;" in svg and '"onclick' not in svg and "&amp;" in svg
    plot = render_svg.plot({HOSTILE: [(0, 1.0), (1, float("nan")), (2, 0.5)], "b": [(0, 2.0)]}, title=HOSTILE)
    assert HOSTILE not in plot and plot.count("<polyline") == 2
    assert "nothing to plot" in render_svg.plot({"a": [(0, float("inf"))]})
    assert "too many" in render_svg.graph([{"id": str(i)} for i in range(render_svg.MAX_NODES + 1)], [])


def test_rate_limiter_memory_is_bounded():
    from pas.hub.app import RateLimiter
    lim = RateLimiter(rate=1000.0, burst=2, max_clients=50)
    for i in range(500):
        lim.take(f"client-{i}")
    assert len(lim._buckets) <= 50
    lim = RateLimiter(rate=0.001, burst=1)
    lim.take("a")
    with pytest.raises(Exception, match="too many requests"):
        lim.take("a")
    lim.take("b")                                   # another client is not limited by a's use


def test_pas_push_and_pull_with_a_hub(hub, tmp_path):
    """`pas push` / `pas pull` take a hub's URL like any other repository (token in $PAS_HUB_TOKEN)."""
    from test_cli import _env, pas, pas_json
    local = tmp_path / "local"
    pas("init", local)
    with Repository.open(local, write=True) as r:
        vid = big_version(r, "pushed", seed=11, message="via pas push")
    url = f"{hub['url']}/r/pub"
    p = pas("-R", local, "push", url, "pushed", expect=1, env=_env())          # no token: refused, typed
    assert "needs a token" in p.stderr
    out = pas_json("-R", local, "push", url, "pushed", env=_env(PAS_HUB_TOKEN=ALICE))
    assert out["versions"] == [vid] and out["refs"] == {"pushed": vid}
    again = pas_json("-R", local, "push", url, "pushed", env=_env(PAS_HUB_TOKEN=ALICE))
    assert again["versions"] == [] and again["bytes"] == 0
    pas("init", tmp_path / "back")
    got = pas_json("-R", tmp_path / "back", "pull", url, "pushed", env=_env())
    assert got["versions"] == [vid]
    assert pas_json("-R", tmp_path / "back", "verify", env=_env())["ok"]
