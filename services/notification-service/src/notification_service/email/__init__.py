"""Email: templates, contact and program copies, suppressions, the queue of mails and the sender
that drains it over SMTP."""
