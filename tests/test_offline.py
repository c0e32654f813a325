"""The public contract works with no network at all: a fresh interpreter whose sockets refuse to connect."""
import subprocess, sys, textwrap

NO_NETWORK = textwrap.dedent('''
    import socket
    def refuse(*args, **kwargs): raise OSError("network disabled by the test")
    socket.socket.connect = refuse
    socket.create_connection = refuse
''')

def run_offline(code):
    return subprocess.run([sys.executable, '-c', NO_NETWORK + textwrap.dedent(code)], capture_output=True, text=True, timeout=300)

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
