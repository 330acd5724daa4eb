"""An app module that fails while it is imported: the runtime must report it to `/init/error`."""

raise ImportError("broken_app cannot be imported (on purpose, for the init-error test)")
