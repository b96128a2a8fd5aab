"""The component service: Golem components, versions, WASM metadata, initial files, plugins."""
