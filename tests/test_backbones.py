"""Loading a backbone by hub id on a machine that cannot reach the hub (a cluster's compute node)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sapt_lightning.backbones import load as backbone_load
from sapt_lightning.errors import ConfigError


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_proxy(monkeypatch):
    for var in (*backbone_load._PROXY_VARS, "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)


def test_the_hub_probe_connects_to_hf_endpoint(monkeypatch, no_proxy):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert backbone_load.hub_reachable()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert not backbone_load.hub_reachable()
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:99999")  # no such port: unreachable, not a traceback
    assert not backbone_load.hub_reachable()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")  # only the hub client can go through it
    assert backbone_load.hub_reachable()


def test_a_hub_id_out_of_reach_is_read_from_the_cache_only(monkeypatch, no_proxy, tmp_path):
    monkeypatch.setattr(backbone_load, "hub_reachable", lambda timeout=3.0: False)
    assert backbone_load.hub_load_options("google-t5/t5-large") == {"local_files_only": True}
    (tmp_path / "config.json").write_text("{}")
    assert backbone_load.hub_load_options(str(tmp_path)) == {}  # a saved model's directory is never looked up
    monkeypatch.setattr(backbone_load, "hub_reachable", lambda timeout=3.0: True)
    assert backbone_load.hub_load_options("google-t5/t5-large") == {}
    for var, value in (("HF_HUB_OFFLINE", "ON"), ("TRANSFORMERS_OFFLINE", "1")):  # offline by choice: no probe
        monkeypatch.setenv(var, value)
        assert backbone_load.hub_load_options("google-t5/t5-large") == {"local_files_only": True}
        monkeypatch.delenv(var)

    monkeypatch.setattr(backbone_load, "hub_reachable", lambda timeout=3.0: False)
    cfg = OmegaConf.create(
        {
            "name": "t5_large",
            "family": "t5",
            "name_or_path": "sapt-test/not-cached",
            "dtype": "float32",
            "target_modules": ["q", "v"],
            "tiny": None,
        }
    )
    with pytest.raises(
        ConfigError,
        match=r"cannot load backbone 't5_large' from 'sapt-test/not-cached': the Hugging Face "
        r"hub is out of reach from here \(or HF_HUB_OFFLINE is set\) and the local Hugging Face cache does not hold it",
    ):
        backbone_load.load_backbone(cfg, tmp_path)


def test_a_cached_hub_backbone_loads_with_the_hub_out_of_reach(tmp_path, cache_dir):
    """A model in the Hugging Face cache (the layout a download leaves) loads by its hub id with
    the endpoint refusing connections, in a fresh process (the hub client reads HF_HOME at import)."""
    from conftest import compose_cfg

    from sapt_lightning.backbones.tiny import ensure_tiny_backbone

    tiny = compose_cfg(["debug=smoke"]).backbone  # random weights: builds in a second
    saved = ensure_tiny_backbone(tiny.name, tiny.family, OmegaConf.to_container(tiny.tiny, resolve=True), cache_dir)
    snapshot = tmp_path / "hf" / "hub" / "models--sapt-test--tiny-t5" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    for f in Path(saved).iterdir():
        (snapshot / f.name).symlink_to(f)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0123abcd")

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in backbone_load._PROXY_VARS
        and k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "TRANSFORMERS_CACHE")
    }
    port = _closed_port()
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{port}")
    # Every connection to the endpoint is counted. Two at most: the probe's, and huggingface_hub's
    # one fetch of its agent registry (for a user-agent header). A file request is retried 5 times
    # over about 25 s: transformers' adapter lookup, which drops local_files_only, made 6 more.
    code = f"""
import socket
from pathlib import Path
from omegaconf import OmegaConf
tries = []
connect = socket.socket.connect
socket.socket.connect = lambda sock, address: (tries.append(address), connect(sock, address))[1]
from sapt_lightning.backbones import load_backbone
cfg = OmegaConf.create({{'name': 'tiny', 'family': 't5', 'name_or_path': 'sapt-test/tiny-t5', 'dtype': 'float32',
                        'target_modules': ['q', 'v'], 'tiny': None}})
backbone = load_backbone(cfg, Path('.'))
print('loaded', backbone.model.config.d_model, 'connections', sum(a[1] == {port} for a in tries))
"""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded, connections = out.stdout.split("loaded ")[-1].split(" connections ")
    assert int(loaded) == tiny.tiny.d_model and 1 <= int(connections) <= 2, out.stdout
