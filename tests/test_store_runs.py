"""Teacher answers are paid for once, through the workflow: a folder dataset scored by Snakemake with the
NIQE stand-in teacher and with a vLLM teacher (the loopback server of tests/fake_vllm_server.py, which
counts the requests it answers), taken through the changes of issue 11 one after the other:

  shard count -> 0 requests; split seed -> 0 point requests (pairs: only those not asked before, and every
  pair drawn among images that stay in train was drawn before);
  batch size / concurrency -> no scoring job at all; N images added -> N point requests, plus requests for
  the pairs never asked; a setting that changes an answer (the prompt; the stand-in's level_scale) ->
  everything asked again; the store deleted -> everything asked again, with the same numbers.

Requests are counted three ways that must agree: the server's count (vLLM), the rows the store gained, and
the ``requests`` provenance of the scoring jobs that ran (rows reused from the store, rows scored now).
Only the teacher's outputs are built (points.parquet, pairs.parquet), not the students."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
import yaml

from fake_vllm_server import Behaviour, FakeVllmServer
from leaf_steps.core.io import read_provenance
from leaf_steps.teachers.scoring import add_counts
from leaf_steps.teachers.store import KINDS, TeacherStore
from test_dataset_reruns import folder_run_config, make_data, photo
from test_reruns import planned
from tiny_run import Run, run_snakemake

N_IMAGES = 20


class Chain:
    """One folder run (its config file can be edited), its score store, and request accounting."""

    def __init__(self, root: Path, teacher: str, server: FakeVllmServer | None):
        self.data, self.store = root / "data", root / "store"
        make_data(self.data, N_IMAGES)
        cfg = folder_run_config(self.data)
        cfg["teacher_store"] = str(self.store)
        cfg["scoring"] |= {"shards": 1, "batch_size": 8}
        cfg["calibration"]["ratios"] = [0]  # the students are not built here
        if teacher == "vlm":
            cfg["teachers"] = {
                "vlm": {"backend": "vllm", "model": "fake/vlm", "base_url": server.base_url, "max_concurrency": 2}
            }
        cfg["teacher"] = teacher
        self.teacher, self.server = teacher, server
        work = root / "run"
        work.mkdir()
        self.run = Run(work, work / "tiny.yaml", work / "results" / cfg["run_name"])
        self.write(cfg)

    def config(self) -> dict:
        return yaml.safe_load(self.run.configfile.read_text())

    def write(self, cfg: dict) -> None:
        self.run.configfile.write_text(yaml.safe_dump(cfg, sort_keys=False))

    def edit(self, change) -> None:
        cfg = self.config()
        change(cfg)
        self.write(cfg)

    def out(self, kind: str) -> Path:
        return self.run.results / "teacher" / self.teacher / f"{kind}s.parquet"

    def store_rows(self) -> dict[str, int]:
        if not self.store.exists():
            return dict.fromkeys(KINDS, 0)
        entries = TeacherStore(self.store).summary()["settings"]
        return {kind: sum(e["kinds"].get(kind, {}).get("answers", 0) for e in entries) for kind in KINDS}

    def shard_stamps(self) -> dict[Path, int]:
        folder = self.run.results / "teacher" / self.teacher
        return {p: p.stat().st_mtime_ns for kind in KINDS for p in (folder / f"{kind}s").glob("*.parquet")}

    def score(self, *extra: str) -> dict:
        """Build the teacher's outputs; what each kind's scoring jobs that ran reused and scored, the requests
        the server answered, the rows the store gained."""
        before, rows_before = self.shard_stamps(), self.store_rows()
        served_before = self.server.stats()["answers"] if self.server else 0
        targets = [str(self.out(kind).relative_to(self.run.workdir)) for kind in KINDS]
        proc = run_snakemake(self.run, *targets, *extra)
        assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"
        ran = {p: read_provenance(p)["requests"] for p, t in self.shard_stamps().items() if before.get(p) != t}
        result = {"jobs": {kind: sum(1 for p in ran if p.parent.name == f"{kind}s") for kind in KINDS}}
        for kind in KINDS:
            counts = add_counts([c for p, c in ran.items() if p.parent.name == f"{kind}s"])
            # rows reused from the store, rows scored now, requests sent (a pair sampled twice is one request)
            result[kind] = (counts["reused"], counts["scored"], counts["requests_sent"])
            assert counts["failed"] == 0
            assert self.store_rows()[kind] - rows_before[kind] == counts["requests_sent"]  # every answer is stored
        result["sent"] = sum(result[k][2] for k in KINDS)
        if self.server:
            result["served"] = self.server.stats()["answers"] - served_before
            assert result["served"] == result["sent"], result
        print(f"{self.teacher}: {result}")  # pytest -s shows the counts of each change
        return result

    def pair_keys(self) -> set[str]:
        """The (A, B) content keys of the run's sampled pairs."""
        images = pl.read_parquet(self.run.results / "dataset/images.parquet").select("image_id", "sha256")
        pairs = pl.read_parquet(self.run.results / "pairs/pairs.parquet")
        keyed = pairs.join(images.rename({"image_id": "a_id", "sha256": "a"}), on="a_id").join(
            images.rename({"image_id": "b_id", "sha256": "b"}), on="b_id"
        )
        assert keyed.height == pairs.height
        return {f"{a}:{b}" for a, b in keyed.select("a", "b").iter_rows()}

    def scores(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        return pl.read_parquet(self.out("point")), pl.read_parquet(self.out("pair"))


def sampled_pairs(chain: Chain) -> tuple[set[str], set[tuple[str, str]]]:
    """The training images and the sampled (a_id, b_id) pairs of the run as it stands."""
    manifest = pl.read_parquet(chain.run.results / "dataset/manifest.parquet")
    pairs = pl.read_parquet(chain.run.results / "pairs/pairs.parquet")
    return set(manifest.filter(pl.col("split") == "train")["image_id"]), set(zip(pairs["a_id"], pairs["b_id"]))


def pairs_kept_among(before: tuple[set[str], set[tuple[str, str]]], chain: Chain) -> bool:
    """Every pair sampled now whose two images were in train before was sampled before (the sampler ranks
    pairs by a hash of their ids: only pairs with an image new to train are drawn afresh)."""
    train_before, pairs_before = before
    _, pairs_now = sampled_pairs(chain)
    among = {(a, b) for a, b in pairs_now if a in train_before and b in train_before}
    return bool(among) and among <= pairs_before


def n_train(chain: Chain) -> int:
    return pl.read_parquet(chain.run.results / "dataset/manifest.parquet").filter(pl.col("split") == "train").height


@pytest.mark.slow
@pytest.mark.parametrize("teacher", ["standin", "vlm"])
def test_answers_are_paid_for_once_through_the_workflow(tmp_path, teacher):
    server = FakeVllmServer("fake/vlm", Behaviour(image_limit=2)).start() if teacher == "vlm" else None
    try:
        chain = Chain(tmp_path, teacher, server)

        first = chain.score()
        pairs = n_train(chain)  # pairs.count: null -> one pair per training image
        baseline = chain.scores()
        asked_pairs = chain.pair_keys()
        assert (first["point"], first["pair"]) == ((0, N_IMAGES, N_IMAGES), (0, pairs, len(asked_pairs)))

        # The shard count: new shard jobs, every answer from the store.
        chain.edit(lambda cfg: cfg["scoring"].update(shards=3))
        resharded = chain.score()
        assert resharded["jobs"] == {"point": 3, "pair": 3}
        assert (resharded["point"], resharded["pair"], resharded["sent"]) == ((N_IMAGES, 0, 0), (pairs, 0, 0), 0)
        assert chain.scores()[0].equals(baseline[0]) and chain.scores()[1].equals(baseline[1])

        # A new split: point scoring does not even run; pairs are drawn from the new training split and only
        # those never asked are sent.
        before = sampled_pairs(chain)
        chain.edit(lambda cfg: cfg["dataset"].update(split_seed=11))
        resplit = chain.score()
        assert pairs_kept_among(before, chain)
        new_pairs = chain.pair_keys() - asked_pairs
        assert resplit["jobs"]["point"] == 0 and resplit["point"] == (0, 0, 0)
        assert resplit["pair"][2] == len(new_pairs) and sum(resplit["pair"][:2]) == n_train(chain)
        asked_pairs |= chain.pair_keys()

        # How the teacher is run: no scoring job at all.
        def how_it_runs(cfg):
            cfg["scoring"]["batch_size"] = 3
            cfg["scoring"]["max_error_fraction"] = 0.5
            if teacher == "vlm":
                cfg["teachers"]["vlm"] |= {"max_concurrency": 7, "request_timeout_s": 33.0}

        chain.edit(how_it_runs)
        assert not {rule for rule, _ in planned(chain.run)} & {
            "score_points",
            "score_pairs",
            "gather_points",
            "gather_pairs",
        }

        # N images added: N point requests, and pair requests for the pairs never asked only.
        added = 3
        rows = [f"new/{i}.png,{i + 1.5}" for i in range(added)]
        for i in range(added):
            photo(chain.data / "images" / f"new/{i}.png", seed=1000 + i)
        with (chain.data / "mos.csv").open("a") as f:
            f.write("\n".join(rows) + "\n")
        before = sampled_pairs(chain)
        grown = chain.score()
        assert pairs_kept_among(before, chain)
        new_pairs = chain.pair_keys() - asked_pairs
        assert grown["point"] == (N_IMAGES, added, added)
        assert grown["pair"][2] == len(new_pairs) and sum(grown["pair"][:2]) == n_train(chain)
        if teacher == "vlm":
            assert grown["served"] == added + len(new_pairs)
        total = N_IMAGES + added
        now = chain.scores()

        # A setting that changes an answer: everything asked again (the stand-in reads no prompt: its fit's
        # level_scale is one of its answer settings).
        def answer_setting(cfg):
            if teacher == "vlm":
                cfg["prompts"]["point"] += " Be strict."
                cfg["prompts"]["pair"] += " Be strict."
            else:
                cfg["teachers"]["standin"]["level_scale"] = 0.3

        chain.edit(answer_setting)
        changed = chain.score()
        assert changed["point"] == (0, total, total)
        assert changed["pair"] == (0, n_train(chain), len(chain.pair_keys()))

        # Back to the earlier settings, then the store deleted: everything asked again, the same numbers.
        chain.edit(lambda cfg: answer_setting_undo(cfg, teacher))
        back = chain.score()
        assert back["sent"] == 0 and chain.scores()[0].equals(now[0]) and chain.scores()[1].equals(now[1])
        shutil.rmtree(chain.store)
        again = chain.score("--forcerun", "score_points", "score_pairs")
        assert again["point"] == (0, total, total)
        assert again["pair"] == (0, n_train(chain), len(chain.pair_keys()))
        assert chain.scores()[0].equals(now[0]) and chain.scores()[1].equals(now[1])
    finally:
        if server:
            server.stop()


def answer_setting_undo(cfg: dict, teacher: str) -> None:
    if teacher == "vlm":
        for kind in ("point", "pair"):
            cfg["prompts"][kind] = cfg["prompts"][kind].removesuffix(" Be strict.")
    else:
        cfg["teachers"]["standin"].pop("level_scale")
