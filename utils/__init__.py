"""Small shared helpers: errors that become one-line CLI messages, atomic file writes."""
