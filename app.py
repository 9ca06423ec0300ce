"""effattn dashboard: `streamlit run app.py`.

The router: lets the visitor in (optional login, dashboard/auth.py and docs/LOGIN.md), declares
the pages, draws the shared sidebar (dashboard/sidebar.py) and runs the selected page. Cache
problems end in a one-line st.error naming the file; no caches end in a page that says how to
make them. Never imports torch or effattn.

The page scripts live in dashboard/pages/, not in a top-level pages/ folder: Streamlit treats a
pages/ folder beside the entry file as an old-style multipage app until the first st.navigation
call, so a deep link opened first on a fresh server (e.g. /explorer?ex_example=3) would run
the page alone, without this router and its sidebar.
"""

from __future__ import annotations

import logging
import time

import streamlit as st

from dashboard import auth, sidebar
from dashboard.errors import DashboardError, NoCachesError

st.set_page_config(page_title="effattn: effective vs standard attention", page_icon=":material/grid_on:",
                   layout="wide")

PAGES = [
    st.Page("dashboard/pages/overview.py", title="Overview", icon=":material/home:", default=True),
    st.Page("dashboard/pages/patterns.py", title="Patterns", icon=":material/view_quilt:"),
    st.Page("dashboard/pages/token_types.py", title="Token types", icon=":material/label:"),
    st.Page("dashboard/pages/special_tokens.py", title="Special tokens", icon=":material/flag:"),
    st.Page("dashboard/pages/attribution.py", title="Attribution", icon=":material/compare_arrows:"),
    st.Page("dashboard/pages/sparse.py", title="Sparse attention", icon=":material/filter_alt:"),
    st.Page("dashboard/pages/finetuning.py", title="Finetuning", icon=":material/tune:"),
    st.Page("dashboard/pages/compare_runs.py", title="Compare runs", icon=":material/compare:"),
    st.Page("dashboard/pages/explorer.py", title="Example explorer", icon=":material/search:"),
    st.Page("dashboard/pages/own_input.py", title="Your own input", icon=":material/edit_note:"),
    st.Page("dashboard/pages/cost.py", title="Cost", icon=":material/timer:"),
]

HOW_TO_PRECOMPUTE = """
Make a run folder first (fine-tune, extract, analyse), e.g. on the GLUE TSVs:

```bash
python -m precompute --tasks rte,mrpc,qnli,sst2,stsb --glue-dir ../shared/glue --out data/minilm
```

`python -m precompute --help` explains every option. The dashboard reads every folder under
`data/` that has a `manifest.json`, or the folder or URL in the environment variable
`EFFATTN_DATA`. Then reload this page.
"""


def main() -> None:
    start = time.perf_counter()
    auth.gate()  # off unless secrets.toml has [auth]; otherwise stops here for a visitor not let in
    page = st.navigation(PAGES, position="sidebar", expanded=True)
    try:
        st.session_state["_selection"] = sidebar.render(page.url_path)
        page.run()
    except NoCachesError as error:
        st.title("No cached results yet")
        st.warning(f"{error}.")
        st.markdown(HOW_TO_PRECOMPUTE)
    except DashboardError as error:
        st.error(str(error), icon=":material/error:")
    except Exception as error:  # last resort: one line, never a traceback in the page
        logging.getLogger("effattn.dashboard").exception("page %s failed", page.title)
        st.error(f"This page failed ({type(error).__name__}: {error}). The server log has the details; "
                 "please report it with the URL of this view.", icon=":material/error:")
    finally:  # server-side render time of this run (benchmarks/page_render.py reads it)
        st.session_state["_render_seconds"] = time.perf_counter() - start


main()
