"""Built-in plugins and the cached entry points to everything plugins provide.

Each built-in component family lives in one module of this package and registers through the same
``register_components`` hook a third-party package uses. To add one, create the module and append
its dotted name to :data:`BUILTIN_PLUGINS`.

Third-party plugins are entry points of group ``cogframe``. The environment variable
``COGFRAME_PLUGINS`` selects them: unset loads all installed ones; ``COGFRAME_PLUGINS=a,b`` loads
only the entry points named ``a`` and ``b`` (an unknown name is an error); ``COGFRAME_PLUGINS=``
(empty) loads none. Built-in plugins always load.
"""

from __future__ import annotations

import pluggy

from cogframe.plugin_loader import PluginSet, load_plugins
from cogframe.registry import Registries

BUILTIN_PLUGINS: tuple[str, ...] = (
    "cogframe.plugins.loggers",
    "cogframe.plugins.attention_naive",
    "cogframe.plugins.attention_sdpa",
    "cogframe.plugins.attention_swin3d",
    "cogframe.plugins.attention_flex",
    "cogframe.plugins.attention_xformers",
    "cogframe.plugins.attention_local_window",
    "cogframe.plugins.attention_frame_blocks",
    "cogframe.plugins.task_train",
    "cogframe.plugins.task_train_super_resolution",
    "cogframe.plugins.tokenizer_sentencepiece",
    "cogframe.plugins.vqvae",
    "cogframe.plugins.dataset_moving_shapes",
    "cogframe.plugins.dataset_video_folder",
    "cogframe.plugins.frame_rate",
    "cogframe.plugins.task_train_text_tokenizer",
    "cogframe.plugins.task_train_vqvae",
    "cogframe.plugins.task_train_video_classifier",
    "cogframe.plugins.task_export_dataset",
    "cogframe.plugins.task_prepare",
    "cogframe.plugins.icetk",
    "cogframe.plugins.token_samplers",
    "cogframe.plugins.stages",
    "cogframe.plugins.stage_sliding_window",
    "cogframe.plugins.stage_super_resolution",
    "cogframe.plugins.task_sample",
    "cogframe.plugins.task_pipeline",
)

_plugin_set: PluginSet | None = None
_registries: Registries | None = None


def load(reload: bool = False) -> PluginSet:
    """Returns the loaded plugins (built-ins + selected entry points), loading them once.

    Args:
        reload: Load again, re-reading ``BUILTIN_PLUGINS`` and ``COGFRAME_PLUGINS``.
    """
    global _plugin_set, _registries
    if reload or _plugin_set is None:
        _registries = None
        _plugin_set = None
        _plugin_set = load_plugins(BUILTIN_PLUGINS)
    return _plugin_set


def get_plugin_manager(reload: bool = False) -> pluggy.PluginManager:
    """Returns the pluggy manager holding every loaded plugin (cached)."""
    return load(reload).manager


def get_registries(reload: bool = False) -> Registries:
    """Returns the registries filled by every loaded plugin's ``register_components`` (cached).

    Args:
        reload: Reload the plugins and rebuild the registries.
    """
    global _registries
    plugin_set = load(reload)
    if _registries is None:
        _registries = plugin_set.registries()
    return _registries


def reset_plugins() -> None:
    """Forgets the cached plugins and registries; the next call loads them again (used by tests)."""
    global _plugin_set, _registries
    _plugin_set = None
    _registries = None
