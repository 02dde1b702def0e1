//! The websocket lesson: filled in by its own issue.
