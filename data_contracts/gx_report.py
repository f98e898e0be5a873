"""Great Expectations suites built from the contract rules, run on a pandas view.

Great Expectations has no Polars backend, so each table is handed over as pandas.
This module imports GX lazily, inside its functions: it is used by the batch
validation step only, never on the serving path.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from data_contracts.rules import Expectation, rules_for
from data_contracts.schemas import CONTRACTS


@dataclass(frozen=True)
class ExpectationOutcome:
    table: str
    rule: str
    expectation: str
    kwargs: dict[str, Any]
    success: bool
    unexpected_count: int
    element_count: int
    examples: list[Any]


def suite_for(table: str) -> list[tuple[str, Expectation]]:
    """(rule name, expectation) pairs of one table's suite."""
    return [(r.name, e) for r in rules_for(CONTRACTS[table]) for e in r.expectations]


def _pandas_view(frame: pl.DataFrame) -> Any:
    converted = frame.with_columns(
        [pl.col(c).list.join(";") for c, t in frame.schema.items() if isinstance(t, pl.List)]
        + [
            pl.col(c).cast(pl.Datetime("us"))
            for c, t in frame.schema.items()
            if isinstance(t, pl.Date)
        ]
        + [
            pl.col(c).dt.replace_time_zone(None)
            for c, t in frame.schema.items()
            if isinstance(t, pl.Datetime) and t.time_zone is not None
        ]
    )
    return converted.to_pandas()


CHUNK_ROWS = 200_000  # rows handed to pandas at a time: bounds memory on large inputs


def run_suites(
    views: dict[str, pl.DataFrame], chunk_rows: int = CHUNK_ROWS
) -> list[ExpectationOutcome]:
    """Run each table's suite on its view; return one outcome per expectation.

    Large tables are validated in chunks of `chunk_rows` and the counts added up;
    uniqueness, which needs every row at once, runs on the id column alone.
    """
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}  # type: ignore[assignment]
    source = context.data_sources.add_pandas("caravan_inputs")
    totals: dict[tuple[str, int], ExpectationOutcome] = {}
    for table, frame in views.items():
        pairs = [(r, e) for r, e in suite_for(table) if _columns_present(e, frame)]
        whole = [(r, e) for r, e in pairs if e.type == "ExpectColumnValuesToBeUnique"]
        chunked = [(r, e) for r, e in pairs if e.type != "ExpectColumnValuesToBeUnique"]
        runs: list[tuple[str, list[tuple[str, Expectation]], pl.DataFrame]] = [
            (f"{table}_rows_{i}", chunked, frame.slice(i, chunk_rows))
            for i in range(0, max(frame.height, 1), chunk_rows)
            if chunked
        ]
        runs += [
            (f"{table}_{e.kwargs['column']}_unique", [(r, e)], frame.select(e.kwargs["column"]))
            for r, e in whole
        ]
        for name, run_pairs, part in runs:
            asset = source.add_dataframe_asset(name=name)
            batch = asset.add_batch_definition_whole_dataframe(f"{name}_batch")
            suite = context.suites.add(gx.ExpectationSuite(name=f"caravan_{name}"))
            by_id: dict[str, tuple[int, str, Expectation]] = {}
            for rule, exp in run_pairs:
                added = suite.add_expectation(getattr(gx.expectations, exp.type)(**exp.kwargs))
                by_id[str(added.id)] = (pairs.index((rule, exp)), rule, exp)
            definition = context.validation_definitions.add(
                gx.ValidationDefinition(data=batch, suite=suite, name=f"validate_{name}")
            )
            result = definition.run(
                batch_parameters={"dataframe": _pandas_view(part)}, result_format="SUMMARY"
            )
            # GX does not keep the suite's order in its results: match them by id.
            for res in result.results:
                position, rule, exp = by_id[str(res.expectation_config.id)]  # type: ignore[union-attr]
                details = res.result or {}
                seen = totals.get((table, position))
                count = int(details.get("unexpected_count") or 0)
                elements = int(details.get("element_count") or part.height)
                examples = [str(v) for v in (details.get("partial_unexpected_list") or [])[:5]]
                if seen is not None:
                    count += seen.unexpected_count
                    elements += seen.element_count
                    examples = (seen.examples + examples)[:5]
                totals[(table, position)] = ExpectationOutcome(
                    table=table,
                    rule=rule,
                    expectation=exp.type,
                    kwargs=_short(exp.kwargs),
                    success=count == 0,
                    unexpected_count=count,
                    element_count=elements,
                    examples=examples,
                )
    return [totals[k] for k in sorted(totals, key=lambda k: (list(views).index(k[0]), k[1]))]


def _columns_present(exp: Expectation, frame: pl.DataFrame) -> bool:
    cols = [v for k, v in exp.kwargs.items() if k in ("column", "column_A", "column_B")]
    return all(c in frame.columns for c in cols)


def _short(kwargs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if isinstance(value, list) and len(value) > 8:
            out[key] = [*value[:8], f"... {len(value)} values"]
        elif isinstance(value, str) and len(value) > 120:
            out[key] = value[:117] + "..."
        else:
            out[key] = value
    return out


def write_report(
    outcomes: list[ExpectationOutcome], summary: dict[str, Any], out_dir: Path
) -> Path:
    """Write `gx_results.json` and a readable `index.html`; return the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gx_results.json").write_text(
        json.dumps([o.__dict__ for o in outcomes], indent=2, default=str, ensure_ascii=False)
    )
    rows = []
    for o in outcomes:
        status = "pass" if o.success else "fail"
        rows.append(
            f"<tr class='{status}'><td>{html.escape(o.table)}</td>"
            f"<td><code>{html.escape(o.rule)}</code></td>"
            f"<td>{html.escape(o.expectation)}<br><small>"
            f"{html.escape(json.dumps(o.kwargs, ensure_ascii=False, default=str))}</small></td>"
            f"<td>{status}</td><td>{o.unexpected_count:,} / {o.element_count:,}</td>"
            f"<td>{html.escape(', '.join(o.examples))}</td></tr>"
        )
    totals = "".join(
        f"<tr><td>{html.escape(t)}</td><td>{s['rows']:,}</td><td>{s['accepted']:,}</td>"
        f"<td>{s['quarantined']:,}</td></tr>"
        for t, s in summary.items()
    )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Caravan input validation</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}}
tr.fail td{{background:#fde8e8}}tr.pass td{{background:#eefbee}}</style></head><body>
<h1>Input validation</h1>
<p>Great Expectations suites built from Caravan's contract rules, run on the raw inputs.
Rows breaking a rule are in <code>quarantine/</code> with the rule and a message.</p>
<h2>Rows</h2><table><tr><th>input</th><th>rows</th><th>accepted</th><th>quarantined</th></tr>
{totals}</table>
<h2>Expectations</h2><table><tr><th>input</th><th>rule</th><th>expectation</th>
<th>result</th><th>unexpected</th><th>examples</th></tr>{"".join(rows)}</table>
</body></html>"""
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
