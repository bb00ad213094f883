"""Small stand-ins for the four benchmarks in their real release formats, and a loopback server.

Names, headers, label-file formats and folder layouts follow the real releases (see
docs/datasets.md for the sources and for what was not verified against a real archive);
only the number of images and the pixel sizes are small. ``RangeServer`` serves a folder on
127.0.0.1 with HTTP Range support, logs requests, and can cut a response short to exercise
resumed downloads.
"""

from __future__ import annotations

import csv
import io
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

KONIQ_SCORE_HEADER = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"]
KONIQ_SPLIT_HEADER = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "set"]
AGIQA3K_HEADER = ["name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality", "mos_align", "std_align"]
SPAQ_HEADER = ["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"]


def image_bytes(rng: np.random.Generator, size: tuple[int, int], fmt: str = "JPEG") -> bytes:
    """A small smooth random image (gradient + noise) encoded as ``fmt``."""
    w, h = size
    base = np.linspace(0, 255, w)[None, :, None] * rng.uniform(0.2, 1.0, 3)[None, None, :]
    pixels = np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def write_csv(path: Path, header: list[str] | None, rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")  # QUOTE_MINIMAL: quotes prompts with commas, like the releases
        if header:
            writer.writerow(header)
        writer.writerows(rows)


# --------------------------------------------------------------------------- KonIQ-10k


@dataclass
class KoniqFixture:
    archive_dir: Path  # what the loopback server serves
    resolution: str
    names: list[str]
    mos: dict[str, float]  # 1..5
    mos_zscore: dict[str, float]
    sets: dict[str, str]  # training / validation / test
    image_size: tuple[int, int]


def make_koniq(
    archive_dir: Path,
    n: int = 40,
    counts: tuple[int, int, int] = (28, 4, 8),
    resolution: str = "512x384",
    image_prefix: str = "",
    seed: int = 0,
) -> KoniqFixture:
    """``koniq10k_<res>.zip`` (``<prefix><res>/<name>.jpg``), the scores zip and the official split CSV."""
    assert sum(counts) == n
    rng = np.random.default_rng(seed)
    ids: set[int] = set()
    while len(ids) < n:  # Flickr-style numeric ids of 8 to 11 digits, like the release's file names
        ids.add(int(rng.integers(10**7, 10**11)))
    names = [f"{i}.jpg" for i in sorted(ids, key=lambda _: rng.random())]
    sets = ["training"] * counts[0] + ["validation"] * counts[1] + ["test"] * counts[2]
    rng.shuffle(sets)
    score_rows, split_rows = [], []
    mos, zscore = {}, {}
    for name, set_name in zip(names, sets, strict=True):
        total = int(rng.integers(96, 137))
        votes = rng.multinomial(total, rng.dirichlet(np.ones(5) * 2))
        frac = votes / total
        m = float((np.arange(1, 6) * frac).sum())
        sd = float(np.sqrt((frac * (np.arange(1, 6) - m) ** 2).sum()))
        z = float(np.clip((m - 1) / 4 * 100 + rng.normal(0, 3), 0, 100))
        mos[name], zscore[name] = m, z
        score_rows.append([name, *[repr(float(f)) for f in frac], total, repr(m), repr(sd), repr(z)])
        split_rows.append([name, *[repr(float(f)) for f in frac], total, repr(z), repr(sd), set_name])
    archive_dir.mkdir(parents=True, exist_ok=True)
    size = (64, 48)  # 4:3 like the release, tiny for speed
    with zipfile.ZipFile(archive_dir / f"koniq10k_{resolution}.zip", "w") as zf:
        for name in names:
            zf.writestr(f"{image_prefix}{resolution}/{name}", image_bytes(rng, size))
    scores_csv = io.StringIO()
    csv.writer(scores_csv, lineterminator="\n").writerows([KONIQ_SCORE_HEADER, *score_rows])
    with zipfile.ZipFile(archive_dir / "koniq10k_scores_and_distributions.zip", "w") as zf:
        zf.writestr("koniq10k_scores_and_distributions.csv", scores_csv.getvalue())
    write_csv(archive_dir / "koniq10k_distributions_sets.csv", KONIQ_SPLIT_HEADER, split_rows)
    return KoniqFixture(archive_dir, resolution, names, mos, zscore, dict(zip(names, sets, strict=True)), size)


# --------------------------------------------------------------------------- SPAQ


@dataclass
class SpaqFixture:
    top: Path
    names: list[str]
    mos: dict[str, float]
    sizes: dict[str, tuple[int, int]]


def make_spaq(
    root: Path, n: int = 40, seed: int = 0, top: str = "SPAQ", skip_images: tuple[str, ...] = ()
) -> SpaqFixture:
    """``<top>/TestImage/00001.jpg ...`` and ``<top>/Annotations/MOS and Image attribute scores.xlsx``."""
    import openpyxl

    rng = np.random.default_rng(seed)
    base = root / top
    names = [f"{i:05d}.jpg" for i in range(1, n + 1)]
    sizes = {name: ((96, 72) if i % 2 else (72, 96)) for i, name in enumerate(names)}  # landscape and portrait
    mos = {name: round(float(rng.uniform(1, 99)), 2) for name in names}
    (base / "TestImage").mkdir(parents=True, exist_ok=True)
    for name in names:
        if name not in skip_images:
            (base / "TestImage" / name).write_bytes(image_bytes(rng, sizes[name]))
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(SPAQ_HEADER)
    for name in names:
        sheet.append([name, mos[name], *[round(float(v), 2) for v in rng.uniform(1, 99, 5)]])
    (base / "Annotations").mkdir(parents=True, exist_ok=True)
    workbook.save(base / "Annotations" / "MOS and Image attribute scores.xlsx")
    return SpaqFixture(base, names, mos, sizes)


def zip_folder(folder: Path, archive: Path) -> Path:
    """Zip ``folder`` so that it extracts as ``<folder name>/...`` (how the cloud-drive archives unpack)."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    # Deflated: a stored .xlsx (itself a zip) would leave zip signatures in a truncated copy.
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder.parent).as_posix())
    return archive


# --------------------------------------------------------------------------- AGIQA-3K

AGIQA_GENERATORS = ("AttnGAN", "DALLE2", "glide", "midjourney", "sd1.5", "xl2.2")
AGIQA_VARIANTS = ("normal", "lowstep", "lowcorr", "highcorr")


@dataclass
class AigcFixture:
    top: Path
    label_file: Path
    names: list[str]
    mos: dict[str, float]
    prompts: dict[str, str]
    generators: dict[str, str] = field(default_factory=dict)


def make_agiqa3k(root: Path, n: int = 36, seed: int = 0, top: str = "AGIQA-3K", image_subdir: str = "") -> AigcFixture:
    """``<top>/data.csv`` (real header; prompts with commas are quoted) and the images by name."""
    rng = np.random.default_rng(seed)
    base = root / top
    rows, names, mos, prompts, gens = [], [], {}, {}, {}
    for i in range(n):
        gen, variant = AGIQA_GENERATORS[i % 6], AGIQA_VARIANTS[(i // 6) % 4]
        name = f"{gen}_{variant}_{i:03d}.jpg"
        style = "anime style" if i % 3 == 0 else ""
        prompt = f"a cat doing karaoke number {i}" + (f", {style}" if style else "")
        m = round(float(rng.uniform(0.0, 4.5)), 9)
        rows.append(
            [
                name,
                prompt,
                "",
                "",
                style,
                m,
                round(float(rng.uniform(0.2, 1.0)), 9),
                round(float(rng.uniform(0, 4.5)), 9),
                round(float(rng.uniform(0.2, 1.0)), 9),
            ]
        )
        names.append(name)
        mos[name], prompts[name], gens[name] = m, prompt, gen
        (base / image_subdir).mkdir(parents=True, exist_ok=True)
        (base / image_subdir / name).write_bytes(image_bytes(rng, (64, 64)))
    label = base / "data.csv"
    write_csv(label, AGIQA3K_HEADER, rows)
    return AigcFixture(base, label, names, mos, prompts, gens)


# --------------------------------------------------------------------------- AIGIQA-20K

AIGIQA_GENERATORS = ("DALLE2", "SD1.5", "SDXL", "IF", "PixArt_alpha")


def make_aigiqa20k(root: Path, n: int = 40, seed: int = 0, top: str = "AIGCQA-30K-Image") -> AigcFixture:
    """``<top>/info_train.csv`` with NO header (name,prompt,mos), ``<top>/train/*.png``, plus an unlabelled val part."""
    rng = np.random.default_rng(seed)
    base = root / top
    rows, names, mos, prompts, gens = [], [], {}, {}, {}
    for i in range(n):
        gen = AIGIQA_GENERATORS[i % len(AIGIQA_GENERATORS)]
        name = f"{gen}_{i:04d}.png"
        prompt = f"portrait of a girl, anime fantasy illustration by artist {i}, trending on artstation"
        m = float(rng.uniform(0.1, 5.0))
        rows.append([name, prompt, repr(m)])
        names.append(name)
        mos[name], prompts[name], gens[name] = m, prompt, gen
        (base / "train").mkdir(parents=True, exist_ok=True)
        (base / "train" / name).write_bytes(image_bytes(rng, (48, 48), fmt="PNG"))
    label = base / "info_train.csv"
    write_csv(label, None, rows)
    # The validation part: names and prompts only (its MOS was never published).
    write_csv(base / "info_val.csv", None, [["DALLE2_9999.png", "a val prompt"]])
    (base / "val").mkdir(exist_ok=True)
    (base / "val" / "DALLE2_9999.png").write_bytes(image_bytes(rng, (48, 48), fmt="PNG"))
    return AigcFixture(base, label, names, mos, prompts, gens)


# --------------------------------------------------------------------------- loopback HTTP server


class RangeServer:
    """Serve ``folder`` on 127.0.0.1 with Range support; ``cut_first[name] = k`` sends only k bytes of the first GET."""

    def __init__(self, folder: Path, cut_first: dict[str, int] | None = None):
        self.folder = folder
        self.cut_first = dict(cut_first or {})
        self.requests: list[tuple[str, str | None]] = []  # (file name, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                name = self.path.lstrip("/").split("?")[0]
                range_header = self.headers.get("Range")
                server.requests.append((name, range_header))
                path = server.folder / name
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = 0
                if range_header:
                    start = int(range_header.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                cut = server.cut_first.pop(name, None)
                self.wfile.write(body if cut is None else body[:cut])
                self.wfile.flush()
                if cut is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> RangeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
