"""The page of a token-shift analysis (`tokenshift`): its figures, tables and token-level viewer.

Everything here reads the results file and the token rows that `tokenshift.run_pair` wrote; nothing loads
a model, so a page is redrawn without torch work.
"""

from __future__ import annotations

import html
import json
import re
import uuid
from pathlib import Path

import pandas as pd

from . import plots, tokenshift

NOTEBOOK = Path(__file__).parent / "pages" / "token_shift.ipynb"
PAGE = "token_shift"
CATEGORY_COLORS = {"unshifted": "#ffffff", "marginal": "#fde68a", "shifted": "#fca5a5"}


def shares_table(results: dict) -> pd.DataFrame:
    """This pair's URIAL shares with their 95% intervals over answers, beside the reference's three pairs."""
    summary, intervals = results["summary"], results["summary"]["intervals"]
    rows = [{"pair": "this pair", **{c: f"{100 * summary['shares'][c]:.1f}% "
                                      f"({100 * intervals[c][0]:.1f}-{100 * intervals[c][1]:.1f})"
                                      for c in tokenshift.CATEGORIES}}]
    for pair, shares in results["references"]["urial_shares"].items():
        rows.append({"pair": f"{pair} (Lin et al. 2023)",
                     **{c: f"{100 * s:.1f}%" for c, s in zip(tokenshift.CATEGORIES, shares)}})
    return pd.DataFrame(rows)


def kl_table(results: dict) -> pd.DataFrame:
    """Mean, median and top-5% share of the full KL and of the reference's top-k KL, and its KL@10 mean."""
    s = results["summary"]
    low, high = s["intervals"]["kl"]
    return pd.DataFrame([
        {"measure": "KL, full vocabulary (nats)", "mean": f"{s['kl']['mean']:.3f} ({low:.3f}-{high:.3f})",
         "median": f"{s['kl']['median']:.3f}", "top-5% share": f"{s['kl']['top_share']:.2f}"},
        {"measure": f"KL, top-{tokenshift.TOP_K} (reference code)", "mean": f"{s['kl_topk']['mean']:.3f}",
         "median": f"{s['kl_topk']['median']:.3f}", "top-5% share": f"{s['kl_topk']['top_share']:.2f}"},
        {"measure": "KL@10 (reference code)", "mean": f"{s['kl_top10_mean']:.3f}", "median": "", "top-5% share": ""},
    ])


def figure(results: dict):
    """Two panels: the sorted per-token KL curves (full and top-k) and the URIAL shares by answer position."""
    s = results["summary"]
    fig, (left, right) = plots.panels(2)
    for key, label, style in (("kl", "full vocabulary", "-"), ("kl_topk", f"top-{tokenshift.TOP_K} (reference)", "--")):
        left.plot(s[key]["percentiles"], s[key]["curve"], style, label=f"{label}, mean {s[key]['mean']:.2f}")
    left.set(xlabel="percentile of answer positions (sorted by KL)", ylabel="KL(base || tuned), nats",
             title="Per-token KL, sorted")
    left.axvline(100 * s["kl"]["top_fraction"], color="grey", lw=0.8, ls=":")
    left.legend(fontsize=8)
    table = pd.DataFrame(s["by_position"])
    bottom = None
    for category in tokenshift.CATEGORIES:
        color = {"unshifted": "#9ca3af", "marginal": "#f59e0b", "shifted": "#dc2626"}[category]
        right.bar(table["position"], table[category], bottom=bottom, color=color, label=category, width=0.9)
        bottom = table[category] if bottom is None else bottom + table[category]
    right.set(xlabel="position in the answer (token)", ylabel="share of answers", ylim=(0, 1),
              title="URIAL categories by position")
    right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def token_tables(results: dict) -> tuple:
    """(most often shifted, most often unshifted) tokens as DataFrames: count there, count in all, share."""
    out = []
    for key, category in (("top_shifted", "shifted"), ("top_unshifted", "unshifted")):
        table = pd.DataFrame(results["summary"][key], columns=["token", category, "all", "share"])
        table["share"] = table["share"].map(lambda v: f"{v:.2f}")
        table["token"] = table["token"].map(html.escape)  # "<eos>" is a token, not a tag
        table = table.rename(columns={category: f"times {category}", "all": "times in answers",
                                      "share": f"share {category}"})
        out.append(table)
    return tuple(out)


def viewer_html(results: dict, tokens: list, page_size: int = 10) -> str:
    """A self-contained, offline token viewer: each answer with its tokens coloured by URIAL category; hovering
    or clicking a token shows its rank under the base, its KL and the base's most probable tokens. A search
    box filters the answers by their text, a category filter and pages keep long runs readable."""
    box = "tsv" + uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(results["parameters"], sort_keys=True)).hex[:8]
    data = {"answers": [{"i": a["example"], "q": a["instruction"], "ref": a["reference"],
                         "n": a["tokens"], "s": a["shifted"]} for a in results["answers"]],
            "tokens": [[r["example"], r["token"], r["category"][0], r["base_rank"], round(r["kl"], 4),
                        round(r["base_prob"], 4), round(r["tuned_prob"], 4),
                        [[t, round(p, 4)] for t, p in r["base_top"]]] for r in tokens],
            "pageSize": page_size}
    payload = json.dumps(data).replace("</", "<\\/")
    colors = CATEGORY_COLORS
    return f"""
<div id="{box}" class="tsv">
<style>
#{box} {{font-size: 14px; line-height: 1.9;}}
#{box} .bar {{display: flex; gap: 0.6em; flex-wrap: wrap; align-items: center; margin-bottom: 0.5em;}}
#{box} input, #{box} select, #{box} button {{font-size: 13px; padding: 2px 6px;}}
#{box} .ans {{border-top: 1px solid #e5e7eb; padding: 0.4em 0;}}
#{box} .q {{color: #374151; font-weight: 600; white-space: pre-wrap;}}
#{box} .meta {{color: #6b7280; font-size: 12px;}}
#{box} .tok {{border-radius: 3px; padding: 1px 0; cursor: pointer; white-space: pre-wrap;}}
#{box} .tok:hover, #{box} .tok.on {{outline: 2px solid #2563eb;}}
#{box} .u {{background: {colors['unshifted']};}} #{box} .m {{background: {colors['marginal']};}}
#{box} .s {{background: {colors['shifted']};}}
#{box} .info {{position: sticky; top: 0; background: #f9fafb; border: 1px solid #e5e7eb; padding: 0.4em 0.6em;
  min-height: 3.2em; font-size: 13px; z-index: 1;}}
#{box} .info table {{border-collapse: collapse; margin-top: 0.2em;}}
#{box} .info td {{padding: 0 0.8em 0 0; text-align: left;}}
</style>
<div class="bar">
 <input class="find" type="search" placeholder="search instructions and answers" aria-label="search">
 <select class="only" aria-label="category"><option value="">every answer</option>
  <option value="s">answers with a shifted token</option></select>
 <button class="prev">&larr;</button><span class="page"></span><button class="next">&rarr;</button>
 <span class="meta">colours: <span class="tok u">unshifted (rank 1)</span> <span class="tok m">marginal (2-3)</span>
  <span class="tok s">shifted (&gt; 3)</span></span>
</div>
<div class="info">Hover over or click a token: its rank under the base and what the base would have said.</div>
<div class="list"></div>
<script type="application/json" class="data">{payload}</script>
<script>
(function() {{
  const root = document.getElementById("{box}");
  const data = JSON.parse(root.querySelector(".data").textContent);
  const byAnswer = new Map();
  data.tokens.forEach(t => {{ if (!byAnswer.has(t[0])) byAnswer.set(t[0], []); byAnswer.get(t[0]).push(t); }});
  const text = a => (byAnswer.get(a.i) || []).map(t => t[1]).join("");
  const names = {{u: "unshifted", m: "marginal", s: "shifted"}};
  let page = 0;
  const esc = s => s.replace(/[&<>"]/g, c => ({{"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}})[c]);
  function chosen() {{
    const q = root.querySelector(".find").value.toLowerCase(), only = root.querySelector(".only").value;
    return data.answers.filter(a => (!q || (a.q + " " + text(a)).toLowerCase().includes(q)) && (!only || a.s > 0));
  }}
  function show(t) {{
    const alts = t[7].map(([tok, p]) => "<tr><td><code>" + esc(JSON.stringify(tok)) + "</code></td><td>" +
                                    (100 * p).toFixed(1) + "%</td></tr>").join("");
    root.querySelector(".info").innerHTML = "<b><code>" + esc(JSON.stringify(t[1])) + "</code></b> " + names[t[2]] +
      ": rank " + t[3] + " under the base (p " + (100 * t[5]).toFixed(1) + "%; tuned p " + (100 * t[6]).toFixed(1) +
      "%), KL " + t[4].toFixed(3) + " nats. The base's most probable tokens:<table>" + alts + "</table>";
  }}
  function draw() {{
    const rows = chosen(), pages = Math.max(1, Math.ceil(rows.length / data.pageSize));
    page = Math.min(page, pages - 1);
    root.querySelector(".page").textContent = "page " + (page + 1) + " of " + pages + " (" + rows.length + " answers)";
    const list = root.querySelector(".list");
    list.innerHTML = "";
    rows.slice(page * data.pageSize, (page + 1) * data.pageSize).forEach(a => {{
      const div = document.createElement("div");
      div.className = "ans";
      div.innerHTML = '<div class="q">' + esc(a.q) + '</div><div class="meta">answer ' + a.i + ", " + a.n +
        " tokens, " + a.s + " shifted; reference answer: " + esc(a.ref) + "</div>";
      const body = document.createElement("div");
      (byAnswer.get(a.i) || []).forEach(t => {{
        const span = document.createElement("span");
        span.className = "tok " + t[2];
        span.textContent = t[1];
        span.title = names[t[2]] + ", rank " + t[3];
        span.onmouseenter = () => show(t);
        span.onclick = () => {{ root.querySelectorAll(".tok.on").forEach(e => e.classList.remove("on"));
                               span.classList.add("on"); show(t); }};
        body.appendChild(span);
      }});
      div.appendChild(body);
      list.appendChild(div);
    }});
  }}
  root.querySelector(".find").oninput = () => {{ page = 0; draw(); }};
  root.querySelector(".only").onchange = () => {{ page = 0; draw(); }};
  root.querySelector(".prev").onclick = () => {{ page = Math.max(0, page - 1); draw(); }};
  root.querySelector(".next").onclick = () => {{ page += 1; draw(); }};
  draw();
}})();
</script>
</div>"""


def provenance_table(results: dict) -> pd.DataFrame:
    """Where the numbers come from: both models, the data, the machine, the time."""
    p = results["provenance"]
    rows = [
        ("base", f"{p['base']['argument']} (weights {p['base']['fingerprint'][:16]})"),
        ("tuned", f"{p['tuned']['argument']}{' (adapter)' if p['tuned']['adapter'] else ''} "
                  f"(weights {p['tuned']['fingerprint'][:16]})"),
        ("data", f"{p['data']['argument']} ({p['data']['examples']} examples, SHA-256 {p['data']['sha256'][:16]})"),
        ("machine", f"{p['machine']['cpu']}, {p['machine']['threads']} threads, {p['device']}, {p['precision']}"),
        ("libraries", f"torch {p['machine']['torch']}, transformers {p['machine']['transformers']}, "
                      f"peft {p['machine']['peft']}"),
        ("time", f"loading {p['load_seconds']} s, analysis {p['analysis_seconds']} s "
                 f"({p['examples_per_second']} answers/s), {p['date']}"),
    ]
    return pd.DataFrame(rows, columns=["what", "value"])



def headline(results: dict) -> str:
    """The page's title and first paragraph, every number read from the results."""
    s, p, refs = results["summary"], results["parameters"], results["references"]
    pct = {c: 100 * s["shares"][c] for c in tokenshift.CATEGORIES}
    low, high = (100 * v for v in s["intervals"]["shifted"])
    llama = refs["urial_shares"]["Llama-2-7b / Llama-2-7b-chat"]
    lora, full = refs["ghosh_topk_kl"]["LoRA"], refs["ghosh_topk_kl"]["full fine-tuning"]
    base_template = p["base_template"] or p["template"]
    return (
        f"# Token shift: `{short(p['base'])}` to `{short(p['tuned'])}`\n\n"
        f"The tuned model answered {s['answers']} instructions of `{short(p['data'])}` greedily (prompt template "
        f"*{p['template']}*, the base's *{base_template}*; at most {p['max_new_tokens']} tokens), "
        f"{s['positions']} answer tokens in all. Of them {pct['unshifted']:.1f}% are **unshifted** (the base's "
        f"own first choice), {pct['marginal']:.1f}% **marginal** and {pct['shifted']:.1f}% **shifted** (95% "
        f"interval over answers {low:.1f}-{high:.1f}%); Lin et al. (2023) report {100 * llama[0]:.1f} / "
        f"{100 * llama[1]:.1f} / {100 * llama[2]:.1f}% for Llama-2-7b and its chat model. The mean per-token "
        f"KL(base || tuned) is {s['kl']['mean']:.3f} nats, its median {s['kl']['median']:.3f}, and the top 5% of "
        f"positions carry {100 * s['kl']['top_share']:.0f}% of it. The reference code's top-{tokenshift.TOP_K} "
        f"KL is {s['kl_topk']['mean']:.3f} (Ghosh et al. 2024 on LLaMA-2-7B: LoRA {lora[0]}-{lora[1]}, full "
        f"fine-tuning {full[0]}-{full[1]}).")


def write_page(output_dir) -> Path:
    """Execute the page's notebook on the results in `output_dir` (papermill) and write it as one HTML file
    that works offline (nbconvert, code hidden): `token_shift.ipynb` and `token_shift.html` there."""
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    from . import runs
    output_dir = Path(output_dir).resolve()
    executed = output_dir / f"{PAGE}.ipynb"
    papermill.execute_notebook(str(NOTEBOOK), str(executed), parameters={"results_dir": str(output_dir)},
                               kernel_name="python3", progress_bar=False,
                               resources={"metadata": {"path": str(output_dir)}},
                               kernel_manager_class=runs.kernel_manager_class(runs.KERNEL_ENV),
                               extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    # offline: the template's require.js, MathJax and mermaid come from a CDN, and the page needs none of them
    body = re.sub(r'<script[^>]*src="https?://[^"]*"[^>]*>\s*</script>', "", body)
    body = re.sub(r'<script type="module">(?:(?!</script>).)*cdnjs(?:(?!</script>).)*</script>', "", body, flags=re.S)
    page = output_dir / f"{PAGE}.html"
    page.write_text(body, encoding="utf-8")
    return page


def short(argument: str) -> str:
    """A model argument for a title: a folder's last name, a cache key cut to 12 characters."""
    name = Path(argument).name or argument
    return name[:12] + "…" if len(name) == 64 and all(c in "0123456789abcdef" for c in name) else name
