//! The udp lesson: filled in by its own issue.
