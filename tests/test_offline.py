"""The public contract works with no network at all: a fresh interpreter whose sockets refuse to connect."""
import os, subprocess, sys, textwrap

import pytest

NO_NETWORK = textwrap.dedent('''
    import socket
    def refuse(*args, **kwargs): raise OSError("network disabled by the test")
    socket.socket.connect = refuse
    socket.create_connection = refuse
''')

def run_offline(code, **env):
    return subprocess.run([sys.executable, '-c', NO_NETWORK + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})

@pytest.fixture(scope='module')
def offline(tmp_path_factory):
    "One offline interpreter for the checks that need no special environment: its output, one tagged line each."
    hub = tmp_path_factory.mktemp('hub')
    r = run_offline(f'''
        import torch
        from hfrae.core import *
        m = HFRAE(backbone="efficientnet_lite0").eval()
        maps, scores = m.predict(torch.rand(3, 3, 64, 96))
        print("contract", tuple(maps.shape), tuple(scores.shape))
        for b in ("efficientnet_lite1", "efficientnet_lite2"):
            e = Encoder(b, weights="imagenet")
            print("lite", b, [tuple(f.shape[1:]) for f in e(torch.rand(1, 3, 64, 64))])
        torch.hub.set_dir({str(hub)!r})
        try: Encoder("resnet18", weights="imagenet")
        except RuntimeError as e: print("resnet", str(e).replace("\\n", " "))
    ''')
    assert r.returncode == 0, r.stderr
    return hub, r.stdout.splitlines()

def _tagged(lines, tag): return [l.split(' ', 1)[1] for l in lines if l.startswith(tag + ' ')]

def test_contract_offline(offline):
    assert _tagged(offline[1], 'contract') == ['(3, 64, 96) (3,)']

def test_lite_family_imagenet_offline(offline):
    assert _tagged(offline[1], 'lite') == [
        'efficientnet_lite1 [(24, 16, 16), (40, 8, 8), (112, 4, 4)]',
        'efficientnet_lite2 [(24, 16, 16), (48, 8, 8), (120, 4, 4)]']

def test_resnet_imagenet_offline_error_is_helpful(offline):
    hub, lines = offline
    (msg,) = _tagged(lines, 'resnet')
    assert 'Offline? Copy resnet18-f37072fd.pth' in msg and str(hub) in msg, msg

def test_timm_offline(tmp_path):
    "Random timm weights need no network; timm's pretrained ones fail offline with advice (HF_HUB_OFFLINE: no retries)."
    r = run_offline('''
        import torch
        from hfrae.core import HFRAE
        m = HFRAE("timm:resnet18", weights=None).eval()
        print(tuple(m.predict(torch.rand(2, 3, 64, 64))[0].shape))
        try: HFRAE("timm:resnet18", weights="imagenet")
        except RuntimeError as e: print(e)
    ''', HF_HOME=str(tmp_path), HF_HUB_OFFLINE='1')
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('(2, 64, 64)\n') and 'Offline? Run once with a network' in r.stdout, r.stdout

def test_unreachable_hub_fails_at_once_with_advice(tmp_path):
    "A hub that refuses connections (its address on a closed local port): the advice comes without retries."
    env = {k: v for k, v in os.environ.items() if k != 'HF_HUB_OFFLINE'}
    code = '''
        import time
        from hfrae.core import HFRAE
        t0 = time.perf_counter()
        try: HFRAE("timm:resnet18", weights="imagenet")
        except RuntimeError as e: print(e)
        print(f"seconds {time.perf_counter() - t0:.1f}")
    '''
    r = subprocess.run([sys.executable, '-c', textwrap.dedent(code)], capture_output=True, text=True, timeout=300,
                       env={**env, 'HF_ENDPOINT': 'http://127.0.0.1:9', 'HF_HOME': str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert 'Offline? Run once with a network' in r.stdout, r.stdout
