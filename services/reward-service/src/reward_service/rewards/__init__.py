"""Reading rewards: the list (capped and voided ones included) and cap usage."""
