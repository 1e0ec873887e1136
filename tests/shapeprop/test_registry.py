import pytest

from shapeprop.registry import Registry, UnknownName


def test_lookup_of_a_misspelt_name_suggests_the_closest_and_lists_the_known():
    reg: Registry[int] = Registry("detector")
    reg.register("mask_rcnn", 1)
    reg.register("retinamask", 2)
    with pytest.raises(UnknownName) as err:
        reg.get("mask_rnn")
    assert (
        str(err.value)
        == "unknown detector 'mask_rnn' (did you mean 'mask_rcnn'?); known: mask_rcnn, retinamask"
    )
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
    assert reg.get("retinamask") == 2 and reg.check("mask_rcnn") == "mask_rcnn"


def test_a_clash_names_both_sources_and_replace_overrides():
    reg: Registry[str] = Registry("dataset")
    reg.register("cells", "a", source="plugin_a")
    with pytest.raises(ValueError, match="plugin_b: dataset 'cells' is already registered by plugin_a"):
        reg.register("cells", "b", source="plugin_b")
    reg.register("cells", "b", source="plugin_b", replace=True)
    assert reg.get("cells") == "b" and reg.source("cells") == "plugin_b"
    reg.unregister("cells")
    assert "cells" not in reg and reg.names() == []


def test_decorator_registers_in_order():
    reg: Registry[object] = Registry("backbone")

    @reg.decorator("b")
    def b():
        return None

    reg.register("a", object())
    assert reg.names() == ["b", "a"] and reg.get("b") is b and len(reg) == 2


def test_entries_registered_inside_registering_as_are_the_plugins():
    from shapeprop.registry import BUILTIN, registering_as

    reg: Registry[int] = Registry("method")
    reg.register("builtin", 0)
    with registering_as("my_plugin"):
        reg.register("mine", 1)
    assert reg.source("builtin") == BUILTIN and reg.source("mine") == "my_plugin"
    with registering_as("other_plugin"), pytest.raises(ValueError, match="other_plugin: .* by my_plugin"):
        reg.register("mine", 2)
