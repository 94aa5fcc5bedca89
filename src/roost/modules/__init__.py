"""XMPP features, one module each. Each registers itself with
:func:`roost.core.module.register_module` and is enabled by name in the configuration."""
