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
