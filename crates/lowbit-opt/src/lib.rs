//! Pass manager, textual pipelines and the built-in passes
