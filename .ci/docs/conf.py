"""Sphinx configuration of the offline docs site (`make docs`, `.ci/docs/build.py`).

The notebooks are rendered from their stored outputs by myst-nb; nothing is executed. Equations are typeset by the
MathJax that `.ci/install-mathjax` unpacked into the virtual environment, served from the site's own `_static/`.
"""
import configparser, os, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_cfg = configparser.ConfigParser(); _cfg.read(ROOT / 'settings.ini', encoding='utf-8')
_ini = _cfg['DEFAULT']

project = _ini['lib_name']
author = _ini['author']
copyright = _ini['copyright']
release = version = _ini['version']
html_title = _ini['lib_name']
root_doc = 'index'
language = 'en'

extensions = ['myst_nb']
exclude_patterns = ['**.ipynb_checkpoints']

# notebooks: stored outputs only
nb_execution_mode = 'off'
nb_merge_streams = True
nb_code_prompt_show = 'Code'   # a folded cell's label, as Quarto's code-fold shows it
nb_code_prompt_hide = 'Hide code'
nb_render_markdown_format = 'myst'
myst_enable_extensions = ['dollarmath', 'amsmath', 'colon_fence']
myst_heading_anchors = 3
myst_dmath_double_inline = True

# API entries (`build.py` writes them from the exported cells' source): short names, as nbdev's show_doc shows them
add_module_names = False

# equations: MathJax 3 from the site itself
_site_assets = Path(os.environ.get('HFRAE_SITE_ASSETS', Path(sys.prefix) / 'share' / 'hfrae-site'))
if not (_site_assets / 'mathjax' / 'tex-chtml-full.js').is_file():
    raise FileNotFoundError(f"no MathJax in {_site_assets / 'mathjax'}: run `bash .ci/install-mathjax {sys.prefix}`")
html_static_path = [str(_site_assets)]
mathjax_path = 'mathjax/tex-chtml-full.js'

html_theme = 'sphinx_book_theme'
html_theme_options = {
    'show_toc_level': 2,
    'home_page_in_toc': True,
    'use_download_button': False,
    'use_fullscreen_button': False,
    'navbar_persistent': [],   # the sidebar has the search box; no second one in a header bar
}
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
