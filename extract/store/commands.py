"""Command bodies for ``extract verify``, ``extract rm`` and ``extract migrate``.

Each takes plain arguments, prints with rich and returns the exit code; ``extract/cli.py`` wraps
them in Typer commands.
"""

from __future__ import annotations

import time
from typing import Any

from extract.errors import StoreError

#: Problems printed one per line before the rest is summarised.
SHOW = 50


def verify_cmd(path: str, fix: bool, features: list[str] | None, out: Any) -> int:
    """Print one line per problem; exit 1 when something is wrong (and, with ``fix``, not
    repaired)."""
    from extract.store import FeatureStore

    t0 = time.perf_counter()
    store = FeatureStore(path, "a" if fix else "r", strict=False)
    known = store.features()
    unknown = [f for f in features or [] if f not in known]
    if unknown:
        raise StoreError(f"no feature {', '.join(map(repr, unknown))} in {path}; it has: "
                         f"{', '.join(known) or '(none)'}")
    report = store.verify(fix=fix, features=features or None, progress=out.is_terminal)
    seconds = time.perf_counter() - t0
    for feat, vid in report.incomplete[:SHOW]:
        out.print(f"[yellow]incomplete[/yellow]: {feat}/{vid} (marked damaged earlier; "
                  "`extract run` redoes it)", highlight=False)
    for feat, where, what in report.problems[:SHOW]:
        out.print(f"[red]problem[/red]: {feat}: {where}: {what}", highlight=False)
    if len(report.problems) > SHOW:
        out.print(f"… and {len(report.problems) - SHOW} more problems", highlight=False)
    for feat, where, action in report.fixed[:SHOW]:
        out.print(f"[green]fixed[/green]: {feat}: {where}: {action}", highlight=False)
    gb = report.bytes_checked / 1e9
    failed = report.unfixed if fix else report.problems
    status = "[green]ok[/green]" if not failed else "[red]FAILED[/red]"
    out.print(f"{status}: {report.checked} complete video(s) checked ({gb:.3f} GB in "
              f"{seconds:.1f} s), {len(report.problems)} problem(s), {len(report.fixed)} "
              f"fixed, {len(report.incomplete)} incomplete", highlight=False)
    if fix and report.fixed and not failed:
        out.print("run `extract run` again to redo the videos marked not complete",
                  highlight=False)
    return 1 if failed else 0


def rm_cmd(path: str, feature: str, videos: list[str], yes: bool, out: Any) -> int:
    """Remove a feature, or some of its videos; refuses without ``yes``."""
    from extract.store import FeatureStore

    store = FeatureStore(path, "a")
    if not store.has_feature(feature):
        raise StoreError(f"no feature {feature!r} in {path}; it has: "
                         f"{', '.join(store.features()) or '(none)'}")
    have = store.complete_set(feature)
    what = (f"feature {feature!r} ({len(have)} videos)" if not videos
            else f"{len(videos)} video(s) of {feature!r}")
    missing = [v for v in videos if v not in have]
    if missing:
        raise StoreError(f"not complete in {feature!r}, nothing removed: "
                         f"{', '.join(missing[:5])}" + (" …" if len(missing) > 5 else ""))
    if not yes:
        out.print(f"would remove {what} from {path}; add --yes to do it", highlight=False)
        return 1
    if videos:
        n = store.remove_videos(feature, videos)
        out.print(f"removed {n} video(s) of {feature!r} (their rows are reclaimed when the "
                  "feature is rewritten; the index no longer lists them)", highlight=False)
    else:
        store.remove_feature(feature)
        out.print(f"removed {what}", highlight=False)
    return 0


def migrate_cmd(src: str, dst: str, out: Any) -> int:
    from extract.store.legacy import migrate

    report = migrate(src, dst, progress=out.is_terminal)
    out.print(f"migrated {report.features} feature(s), {report.videos} video(s), "
              f"{report.rows} rows from {src} to {dst}"
              + (f"; {report.skipped_incomplete} incomplete array(s) left out"
                 if report.skipped_incomplete else ""), highlight=False)
    return 0
