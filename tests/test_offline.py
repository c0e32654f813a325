"""The public contract works with no network at all: a fresh interpreter whose sockets refuse to connect."""
import os, subprocess, sys, textwrap

NO_NETWORK = textwrap.dedent('''
    import socket
    def refuse(*args, **kwargs): raise OSError("network disabled by the test")
    socket.socket.connect = refuse
    socket.create_connection = refuse
''')

def run_offline(code, **env):
    return subprocess.run([sys.executable, '-c', NO_NETWORK + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **env})

def test_contract_offline():
    r = run_offline('''
        import torch
        from hfrae.core import *
        m = HFRAE(backbone="efficientnet_lite0").eval()
        maps, scores = m.predict(torch.rand(3, 3, 64, 96))
        assert maps.shape == (3, 64, 96) and scores.shape == (3,), (maps.shape, scores.shape)
        print("ok")
    ''')
    assert r.returncode == 0 and r.stdout.strip() == 'ok', r.stderr

def test_lite_family_imagenet_offline():
    r = run_offline('''
        import torch
        from hfrae.core import Encoder
        for b in ("efficientnet_lite1", "efficientnet_lite2"):
            e = Encoder(b, weights="imagenet")
            print(b, [tuple(f.shape[1:]) for f in e(torch.rand(1, 3, 64, 64))])
    ''')
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        'efficientnet_lite1 [(24, 16, 16), (40, 8, 8), (112, 4, 4)]',
        'efficientnet_lite2 [(24, 16, 16), (48, 8, 8), (120, 4, 4)]'], r.stdout

def test_resnet_imagenet_offline_error_is_helpful(tmp_path):
    r = run_offline(f'''
        import torch
        torch.hub.set_dir({str(tmp_path)!r})
        from hfrae.core import Encoder
        try: Encoder("resnet18", weights="imagenet")
        except RuntimeError as e: print(e)
    ''')
    assert r.returncode == 0, r.stderr
    assert 'Offline? Copy resnet18-f37072fd.pth' in r.stdout and str(tmp_path) in r.stdout, r.stdout

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
