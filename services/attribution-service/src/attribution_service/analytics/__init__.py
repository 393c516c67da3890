"""Growth analytics (issue #22): read models folded from consumed events (link.events,
link.clicks, attribution.events, reward.events) and the routes that answer from them."""
