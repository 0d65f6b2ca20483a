"""The pages' shared UI, one module per responsibility (a page imports ``from pages import
_ui`` and calls ``_ui.<name>``): text (inert user strings, messages), state (the store, the
worker, loaded models, cached view results), selection (model + set in the URL, the runs a
view needs), jobs (job panels), params (qp_* widgets bound to the URL, links), present
(figures, presenter mode, exports)."""

from pages._ui.jobs import (  # noqa: F401
    VIEW_LINKS,
    _live_job,
    job_panel,
    job_title,
    submit,
)
from pages._ui.params import (  # noqa: F401
    _REPLACE_HISTORY,
    _qp_get,
    prompt_link,
    prompt_url,
    qp_int,
    qp_number,
    qp_radio,
    qp_select,
    qp_slider,
    qp_text,
    qp_toggle,
    replace_history,
    set_param,
)
from pages._ui.present import (  # noqa: F401
    TITLE_WRAP,
    _caption,
    _page_figures,
    _too_long,
    chart,
    computed_on_click,
    copy_link_box,
    present_figure,
    presenting,
    report_sections,
    show_figure,
    tour_banner,
    wrap_title,
)
from pages._ui.selection import (  # noqa: F401
    Selection,
    _bound_select,
    model_choices,
    open_view,
    require_runs,
    selection,
    set_choices,
)
from pages._ui.state import (  # noqa: F401
    _WARM_STARTED,
    WARM,
    _compute,
    _root_store,
    _thread,
    _warm_up,
    _worker,
    compute,
    db_path,
    devices,
    input_sanity,
    lens_set,
    libraries_spinner,
    loaded_model,
    start_warm_up,
    store,
    worker,
)
from pages._ui.text import (  # noqa: F401
    _AUTOLINK,
    _JOIN,
    _MD_SPECIAL,
    PAGE_URLS,
    csv_bytes,
    error_box,
    gloss,
    html_text,
    md,
    message,
    unlinked,
)
