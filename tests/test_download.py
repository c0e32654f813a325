"""`download_mvtec` end to end against a local HTTP server (127.0.0.1, Range support) serving archives built here."""
import functools, hashlib, http.server, io, os, tarfile, threading
from pathlib import Path
import numpy as np
import pytest
from PIL import Image
from hfrae.data import MVTEC_ARCHIVE, MVTecFolder, download_mvtec, list_categories
from hfrae.io import download_file

class RangeHandler(http.server.SimpleHTTPRequestHandler):
    ("Serves a folder's files and honours `Range: bytes=N-` (the standard library's handler ignores Range); "
     "can cut a response short.")
    def do_GET(self):
        path = Path(self.translate_path(self.path))
        self.server.requests.append(self.headers.get('Range'))
        if not path.is_file(): return self.send_error(404)
        data, start = path.read_bytes(), 0
        if (rng := self.headers.get('Range')) and self.server.honour_range:
            start = int(rng.removeprefix('bytes=').split('-')[0])
            if start >= len(data):
                self.send_response(416); self.send_header('Content-Range', f'bytes */{len(data)}')
                self.end_headers(); return
            self.send_response(206); self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
        else: self.send_response(200)
        body = data[start:]
        self.send_header('Content-Length', str(len(body))); self.end_headers()
        self.wfile.write(body if self.server.cut_after is None else body[:self.server.cut_after])
        self.close_connection = True

    def log_message(self, *args): pass

@pytest.fixture
def server(tmp_path):
    "A threading HTTP server on 127.0.0.1 serving tmp_path/'srv'; yields it with `.url`."
    (tmp_path/'srv').mkdir()
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0),
                                          functools.partial(RangeHandler, directory=str(tmp_path/'srv')))
    srv.requests, srv.honour_range, srv.cut_after = [], True, None
    srv.url = f'http://127.0.0.1:{srv.server_address[1]}'
    thread = threading.Thread(target=srv.serve_forever, daemon=True); thread.start()
    yield srv
    srv.shutdown(); srv.server_close()

def png_bytes(array):
    buf = io.BytesIO(); Image.fromarray(array).save(buf, format='PNG'); return buf.getvalue()

def add(tar, name, data=b'', **kw):
    info = tarfile.TarInfo(name)
    for k, v in kw.items(): setattr(info, k, v)
    if info.isfile(): info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if info.isfile() else None)

def fake_mvtec(path, extra=()):
    ("A .tar.xz in the official archive's layout with two tiny categories; "
     "`extra` adds members (name, data, attributes).")
    rng = np.random.default_rng(0)
    with tarfile.open(path, 'w:xz') as tar:
        add(tar, 'license.txt', b'CC BY-NC-SA 4.0')
        for cat in ('bottle', 'screw'):
            for i in range(3): add(tar, f'{cat}/train/good/{i:03d}.png',
                                   png_bytes(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)))
            add(tar, f'{cat}/test/good/000.png', png_bytes(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)))
            add(tar, f'{cat}/test/crack/000.png', png_bytes(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)))
            mask = np.zeros((24, 24), np.uint8); mask[4:8, 4:12] = 255
            add(tar, f'{cat}/ground_truth/crack/000_mask.png', png_bytes(mask))
        for name, data, kw in extra: add(tar, name, data, **kw)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()

def files_under(folder): return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob('*'))

def test_download_extract_and_reuse(server, tmp_path):
    digest = fake_mvtec(tmp_path/'srv'/MVTEC_ARCHIVE)
    out = download_mvtec(tmp_path/'data', ['bottle'], url=f'{server.url}/{MVTEC_ARCHIVE}', sha256=digest)
    assert out == tmp_path/'data'/'mvtec_ad' and list_categories(out) == ['bottle']
    assert (tmp_path/'data'/MVTEC_ARCHIVE).read_bytes() == (tmp_path/'srv'/MVTEC_ARCHIVE).read_bytes()
    assert not list((tmp_path/'data').glob('*.part')) and not list((tmp_path/'data').glob('.*'))
    test = MVTecFolder(out/'bottle', 'test', image_size=16)
    assert ((len(MVTecFolder(out/'bottle', image_size=16)), test.labels, test.defect_types, test.has_masks)
            == (3, [1, 0], ['crack', 'good'], True))
    # nearest at pixel centres, 24 → 16: output i reads input ⌊1.5(i + ½)⌋;
    # rows 4-7 give outputs 3, 4 and columns 4-11 give 3..7
    assert test[0]['mask'].sum() == 2 * 5
    # a second category comes from the archive already on disk: no request to the server
    n = len(server.requests)
    download_mvtec(tmp_path/'data', ['screw'], url=f'{server.url}/{MVTEC_ARCHIVE}', sha256=digest)
    assert len(server.requests) == n and list_categories(out) == ['bottle', 'screw']

def test_resume_from_part(server, tmp_path):
    digest = fake_mvtec(tmp_path/'srv'/'a.tar.xz')
    data = (tmp_path/'srv'/'a.tar.xz').read_bytes()
    (tmp_path/'dl').mkdir(); (tmp_path/'dl'/'a.tar.xz.part').write_bytes(data[:1000])
    download_file(f'{server.url}/a.tar.xz', tmp_path/'dl'/'a.tar.xz', digest)
    assert server.requests == ['bytes=1000-']
    assert (tmp_path/'dl'/'a.tar.xz').read_bytes() == data and files_under(tmp_path/'dl') == ['a.tar.xz']

def test_interrupted_download_leaves_only_the_part_then_resumes(server, tmp_path):
    digest = fake_mvtec(tmp_path/'srv'/'a.tar.xz')
    server.cut_after = 1500
    with pytest.raises(ConnectionError, match='run again to resume'):
        download_file(f'{server.url}/a.tar.xz', tmp_path/'dl'/'a.tar.xz', digest)
    assert files_under(tmp_path/'dl') == ['a.tar.xz.part'] and (tmp_path/'dl'/'a.tar.xz.part').stat().st_size == 1500
    server.cut_after = None
    download_file(f'{server.url}/a.tar.xz', tmp_path/'dl'/'a.tar.xz', digest)
    assert server.requests == [None, 'bytes=1500-'] and files_under(tmp_path/'dl') == ['a.tar.xz']
    assert hashlib.sha256((tmp_path/'dl'/'a.tar.xz').read_bytes()).hexdigest() == digest

def test_server_ignoring_range_restarts(server, tmp_path):
    digest = fake_mvtec(tmp_path/'srv'/'a.tar.xz')
    server.honour_range = False
    (tmp_path/'dl').mkdir(); (tmp_path/'dl'/'a.tar.xz.part').write_bytes(b'stale bytes from another file')
    download_file(f'{server.url}/a.tar.xz', tmp_path/'dl'/'a.tar.xz', digest)
    assert (tmp_path/'dl'/'a.tar.xz').read_bytes() == (tmp_path/'srv'/'a.tar.xz').read_bytes()

def test_complete_part_gets_416_and_is_used(server, tmp_path):
    digest = fake_mvtec(tmp_path/'srv'/'a.tar.xz')
    (tmp_path/'dl').mkdir(); (tmp_path/'dl'/'a.tar.xz.part').write_bytes((tmp_path/'srv'/'a.tar.xz').read_bytes())
    download_file(f'{server.url}/a.tar.xz', tmp_path/'dl'/'a.tar.xz', digest)
    assert files_under(tmp_path/'dl') == ['a.tar.xz']

def test_bad_checksum_is_refused_and_leaves_nothing(server, tmp_path):
    fake_mvtec(tmp_path/'srv'/MVTEC_ARCHIVE)
    with pytest.raises(ValueError, match='checksum mismatch') as e:
        download_mvtec(tmp_path/'data', ['bottle'], url=f'{server.url}/{MVTEC_ARCHIVE}', sha256='ab' * 32)
    assert '\n' not in str(e.value)
    assert files_under(tmp_path/'data') == []

@pytest.mark.parametrize('member, why', [
    (('../evil.txt', b'!', {}), "'..'"),
    (('bottle/../../evil.txt', b'!', {}), "'..'"),
    (('/tmp/hfrae-evil.txt', b'!', {}), 'absolute'),
    (('bottle/link', b'', dict(type=tarfile.SYMTYPE, linkname='../../..')), 'link'),
    (('bottle/hard', b'', dict(type=tarfile.LNKTYPE, linkname='/etc/passwd')), 'link'),
    (('bottle/dev', b'', dict(type=tarfile.CHRTYPE)), 'not a regular file'),
])
def test_hostile_member_is_refused_and_leaves_nothing(server, tmp_path, member, why):
    digest = fake_mvtec(tmp_path/'srv'/MVTEC_ARCHIVE, extra=[member])
    with pytest.raises(ValueError, match=f'refusing archive member .*{why}'):
        download_mvtec(tmp_path/'data', ['bottle'], url=f'{server.url}/{MVTEC_ARCHIVE}', sha256=digest)
    # the verified archive, no extracted file, no temporary folder
    assert files_under(tmp_path/'data') == [MVTEC_ARCHIVE]
    assert not (tmp_path/'evil.txt').exists() and not Path('/tmp/hfrae-evil.txt').exists()

def test_http_error_and_unreachable_server(server, tmp_path):
    with pytest.raises(ConnectionError, match='HTTP 404'):
        download_mvtec(tmp_path/'data', ['bottle'], url=f'{server.url}/missing.tar.xz')
    port = server.server_address[1]
    server.shutdown(); server.server_close()
    with pytest.raises(ConnectionError, match=f'cannot download http://127.0.0.1:{port}/x.tar.xz .*place the file at'):
        download_file(f'http://127.0.0.1:{port}/x.tar.xz', tmp_path/'data'/'x.tar.xz')
    assert not list((tmp_path/'data').glob('*.tar.xz'))

def test_archive_placed_by_hand(tmp_path):
    (tmp_path/'data').mkdir()
    digest = fake_mvtec(tmp_path/'data'/MVTEC_ARCHIVE)
    out = download_mvtec(tmp_path/'data', url='http://127.0.0.1:9/unreachable', sha256=digest,
                         categories=['screw', 'bottle'])
    assert list_categories(out) == ['bottle', 'screw']
    with pytest.raises(ValueError, match='has no category zipper'):
        download_mvtec(tmp_path/'data', ['zipper'], url='http://127.0.0.1:9/unreachable', sha256=digest)
    assert files_under(tmp_path/'data').count('mvtec_ad/zipper') == 0


# PIPED: one file per request, each checked against a manifest of SHA-256s, then laid out like MVTec AD

KIND = 'PA_TST01_TL'

def piped_tree(srv, n_good=8):
    ("Under `srv`/data, a fake PIPED kind in the repository's naming (unpadded numbers included), and its manifest "
     "srv/sha256.txt.")
    rng = np.random.default_rng(1)
    files = {f'NoDefects/{KIND}_S_ND_{1 + i // 4}_{1 + i % 4}.bmp': rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
             for i in range(n_good)}
    for p in (1, 2, 3):
        files[f'Defects/{KIND}_S_D_02_{p}.bmp'] = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        truth = rng.integers(0, 256, (6, 6), dtype=np.uint8)           # any gray level: below 128 is impurity
        files[f'Defects/GroundThruth/{KIND}_S_GT_{"2" if p == 3 else "02"}_{p}.bmp'] = truth
    for name, pixels in files.items():
        path = srv/'data'/KIND/name; path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(srv).as_posix()}"
             for p in sorted((srv/'data').rglob('*.bmp'))]
    (srv/'sha256.txt').write_text(''.join(f'{l}\n' for l in lines))
    return srv/'sha256.txt', files

def names(folder): return sorted(p.stem for p in Path(folder).iterdir())

def test_piped_layout_split_and_masks(server, tmp_path):
    from hfrae.piped import download_piped
    manifest, files = piped_tree(tmp_path/'srv')
    out = download_piped(tmp_path/'data', [KIND], server.url, manifest)
    kind = out/KIND
    # the split, computed again: sorted names shuffled by random.Random(0), the first quarter for the test
    good = sorted(Path(n).stem for n in files if n.startswith('NoDefects/'))
    import random; random.Random(0).shuffle(good)
    assert (names(kind/'test/good'), names(kind/'train/good')) == (sorted(good[:2]), sorted(good[2:]))
    assert names(kind/'test/impurity') == [f'{KIND}_S_D_02_{p}' for p in (1, 2, 3)]
    assert names(kind/'ground_truth/impurity') == [f'{KIND}_S_D_02_{p}_mask' for p in (1, 2, 3)]
    for p in (1, 2, 3):
        mask = np.asarray(Image.open(kind/f'ground_truth/impurity/{KIND}_S_D_02_{p}_mask.png'))
        truth = files[f'Defects/GroundThruth/{KIND}_S_GT_{"2" if p == 3 else "02"}_{p}.bmp']
        assert mask.dtype == np.uint8 and np.array_equal(mask, np.where(truth < 128, 255, 0))
        image = np.asarray(Image.open(kind/f'test/impurity/{KIND}_S_D_02_{p}.png'))
        assert np.array_equal(image, files[f'Defects/{KIND}_S_D_02_{p}.bmp'])
    test = MVTecFolder(kind, 'test', image_size=16)
    assert (len(test), test.labels, list_categories(out)) == (5, [0, 0, 1, 1, 1], [KIND])
    assert (out/'ATTRIBUTION.md').read_text(encoding='utf-8').count('CC BY 4.0') == 1
    assert not [p for p in tmp_path.rglob('*') if p.name.startswith('.') or p.name.endswith('.part')]

def test_piped_corrupt_file_is_refused(server, tmp_path):
    from hfrae.piped import download_piped
    manifest, _ = piped_tree(tmp_path/'srv')
    bad = tmp_path/'srv'/'data'/KIND/'NoDefects'/f'{KIND}_S_ND_1_2.bmp'
    data = bytearray(bad.read_bytes()); data[60] ^= 0xff; bad.write_bytes(bytes(data))    # one pixel changed
    with pytest.raises(ValueError, match=f'checksum mismatch for {server.url}/data/{KIND}/NoDefects/.*_ND_1_2.bmp: '
                                         'expected SHA-256 [0-9a-f]{64}, got') as e:
        download_piped(tmp_path/'data', [KIND], server.url, manifest)
    assert '\n' not in str(e.value)
    assert not (tmp_path/'data'/'piped'/KIND).exists()
    assert not [p for p in (tmp_path/'data').rglob('*') if p.name.endswith('.part') or p.name.endswith('.png')]

def test_piped_resumes_and_skips_verified_files(server, tmp_path):
    from hfrae.piped import download_piped
    manifest, _ = piped_tree(tmp_path/'srv')
    last = tmp_path/'srv'/'data'/KIND/'NoDefects'/f'{KIND}_S_ND_2_4.bmp'    # the manifest's last file
    last.rename(tmp_path/'held back')
    with pytest.raises(ConnectionError, match='HTTP 404'):
        download_piped(tmp_path/'data', [KIND], server.url, manifest)
    assert len(server.requests) == 14 and not (tmp_path/'data'/'piped'/KIND).exists()
    (tmp_path/'held back').rename(last)
    kept = tmp_path/'data'/'piped_source'/'data'/KIND/'NoDefects'/f'{KIND}_S_ND_1_1.bmp'
    kept.write_bytes(b'tampered with')                                      # a local file that no longer verifies
    n = len(server.requests)
    out = download_piped(tmp_path/'data', [KIND], server.url, manifest)
    assert len(server.requests) == n + 2 and len(names(out/KIND/'train/good')) == 6
    download_piped(tmp_path/'data', KIND, server.url, manifest)              # laid out already: no request at all
    assert len(server.requests) == n + 2

def test_cli_downloads_piped(server, tmp_path, monkeypatch, capsys):
    import hfrae.piped
    from hfrae.cli import main
    manifest, _ = piped_tree(tmp_path/'srv')
    monkeypatch.setattr(hfrae.piped, 'PIPED_MANIFEST', manifest)
    assert main(['download', 'piped', '--root', str(tmp_path/'data'), '--kind', KIND, '--url', server.url]) == 0
    assert f"PIPED ready in {tmp_path/'data'/'piped'}" in capsys.readouterr().out
    assert list_categories(tmp_path/'data'/'piped') == [KIND]
    assert main(['download', 'piped', '--root', str(tmp_path/'data'), '--kind', 'PA_NOPE01_TL']) == 2
    assert 'unknown PIPED kind PA_NOPE01_TL' in capsys.readouterr().err

def test_cli_failed_piped_download_is_one_line(tmp_path):
    import subprocess, sys
    r = subprocess.run([sys.executable, '-c', 'import sys; from hfrae.cli import main; sys.exit(main())', 'download',
                        'piped', '--root', str(tmp_path), '--kind', 'PA_GLA01_TL', '--url', 'http://127.0.0.1:9'],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'cannot download http://127.0.0.1:9/data/' in r.stderr
    assert not [p for p in tmp_path.rglob('*') if p.is_file()], 'a failed download left files behind'
