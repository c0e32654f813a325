"""The explorer in a real browser: JupyterLab on 127.0.0.1, headless Chromium driven by Playwright.

A notebook trains a tiny model on synthetic data and calls `explore`; the test checks that the widget's pictures render,
moves the image slider with the keyboard and toggles a level checkbox, and waits until the pictures change.
Screenshots go to $HFRAE_ARTIFACTS (default: the test's tmp_path; the path is printed).
Needs Debian `chromium` and pip `playwright` (`.ci/install-browser`); skips without them, except under CI=true where it
fails.
"""
import json, os, secrets, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync']
CELLS = ["import torch\nfrom hfrae.model import HFRAE\nfrom hfrae.learner import fit\n"
         "from hfrae.synthetic import synthetic_category\nfrom hfrae.explorer import explore",
         "train_ds, test_ds = synthetic_category('part', n_train=8, n_test=12, image_size=64, seed=0)\n"
         "torch.manual_seed(0)\nmodel = HFRAE()\n_ = fit(model, train_ds, epochs=2, batch_size=8, progress=False)",
         "ex = explore(model, test_ds)\nex"]
PICTURES = ['input', 'mask', 'level1', 'level2', 'level3', 'fused']
KERNEL_IDLE = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return k && k.status === 'idle'; }"""
RENDERED = ("names => names.every(n => { const im = document.querySelector('img.hfrae-' + n); "
            "return im && im.complete && im.naturalWidth > 0; })")
SRC = "name => document.querySelector('img.hfrae-' + name).src"
CHANGED = ("([name, old]) => { const im = document.querySelector('img.hfrae-' + name); "
           "return im.src !== old && im.complete && im.naturalWidth > 0; }")

def require(ok, why):
    "Skip with `why` unless CI=true, where a missing requirement is a failure."
    if ok: return
    if os.environ.get('CI') == 'true':
        pytest.fail(f"CI=true, so the browser test must run, but {why}: run .ci/install-browser")
    pytest.skip(why)

def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def write_notebook(path):
    cells = [dict(cell_type='code', execution_count=None, metadata={}, outputs=[], source=src) for src in CELLS]
    nb = dict(cells=cells, nbformat=4, nbformat_minor=5,
              metadata=dict(kernelspec=dict(name='python3', display_name='Python 3', language='python')))
    path.write_text(json.dumps(nb))

def api(base, token, path, method='GET'):
    req = urllib.request.Request(f'{base}{path}', method=method, headers={'Authorization': f'token {token}'})
    with urllib.request.urlopen(req, timeout=5) as r: return json.loads(r.read() or b'null')

def start_lab(folder, port, token):
    "JupyterLab on 127.0.0.1:`port` serving `folder`, kernels on one torch thread; returns the process once it answers."
    path = os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=path,
               JUPYTER_CONFIG_DIR=str(folder / 'config'), JUPYTER_RUNTIME_DIR=str(folder / 'runtime'),
               JUPYTER_DATA_DIR=str(folder / 'data'), IPYTHONDIR=str(folder / 'ipython'))
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', '--allow-root', '--ServerApp.ip=127.0.0.1',
           f'--ServerApp.port={port}', '--ServerApp.port_retries=0', f'--IdentityProvider.token={token}',
           '--LabApp.expose_app_in_browser=True',
           f'--ServerApp.root_dir={folder / "work"}']
    log = open(folder / 'jupyter.log', 'w')
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log_tail = (folder / 'jupyter.log').read_text()[-2000:]
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}: {log_tail}")
        try: api(f'http://127.0.0.1:{port}', token, '/api/status'); return proc
        except OSError: time.sleep(0.3)
    proc.terminate(); raise RuntimeError("JupyterLab did not answer within 30 s")

def stop_lab(proc, port, token):
    "Shut down the server's kernels through its API, then the server itself, by PID."
    base = f'http://127.0.0.1:{port}'
    try:
        for k in api(base, token, '/api/kernels'): api(base, token, f"/api/kernels/{k['id']}", 'DELETE')
    except OSError: pass
    proc.terminate()
    try: proc.wait(10)
    except subprocess.TimeoutExpired: proc.kill(); proc.wait()

def test_explorer_in_browser(tmp_path):
    require(Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM} (Debian package 'chromium')")
    try: from playwright.sync_api import sync_playwright
    except ImportError: require(False, "the Python package 'playwright' is not installed")
    t0 = time.monotonic()
    shots = Path(os.environ.get('HFRAE_ARTIFACTS', tmp_path / 'screenshots')); shots.mkdir(parents=True, exist_ok=True)
    (tmp_path / 'work').mkdir()
    write_notebook(tmp_path / 'work' / 'explore.ipynb')
    port, token = free_port(), secrets.token_hex(16)
    proc = start_lab(tmp_path, port, token)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport=dict(width=1500, height=1000))
            page.goto(f'http://127.0.0.1:{port}/lab/tree/explore.ipynb?token={token}')
            page.wait_for_function(KERNEL_IDLE, timeout=30_000)
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            page.wait_for_function(RENDERED, arg=PICTURES, timeout=40_000)      # every picture of the widget has loaded
            page.screenshot(path=shots / '1-rendered.png')
            widths = "names => names.map(n => document.querySelector('img.hfrae-' + n).naturalWidth)"
            sizes = page.evaluate(widths, PICTURES)
            assert sizes == [64] * 6, sizes

            old = {n: page.evaluate(SRC, n) for n in PICTURES}
            page.focus('.hfrae-image-slider .noUi-handle')
            t = time.monotonic(); page.keyboard.press('ArrowRight')
            page.wait_for_function(CHANGED, arg=['input', old['input']], timeout=10_000, polling='raf')
            slider_s = time.monotonic() - t
            page.wait_for_function(CHANGED, arg=['fused', old['fused']], timeout=10_000)
            page.screenshot(path=shots / '2-slider-moved.png')

            old = {n: page.evaluate(SRC, n) for n in PICTURES}
            t = time.monotonic(); page.click('.hfrae-level-box input')                # drop φ1 from f_a
            page.wait_for_function(CHANGED, arg=['fused', old['fused']], timeout=10_000, polling='raf')
            checkbox_s = time.monotonic() - t
            assert page.evaluate(SRC, 'input') == old['input']                       # only f_a changes
            assert not page.is_checked('.hfrae-level-box input')
            page.screenshot(path=shots / '3-level-1-dropped.png')
            browser.close()
    finally:
        stop_lab(proc, port, token)
    print(f"\nbrowser test: {time.monotonic() - t0:.1f} s; round trip in the browser: slider {1000 * slider_s:.0f} ms, "
          f"checkbox {1000 * checkbox_s:.0f} ms; screenshots in {shots}")
