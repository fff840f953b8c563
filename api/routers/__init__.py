"""One router per public resource."""
