//! The mqtt lesson: filled in by its own issue.
