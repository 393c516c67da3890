"""Built-in wording of every template, in English and German: what a program gets until the
merchant saves its own (per program and locale, see domain.choose_wording). Jinja2; the
HTML part is autoescaped."""

from __future__ import annotations

_FOOTER_HTML = (
    '<p style="color:#777;font-size:12px">'
    '{{ program.name }} · <a href="{{ unsubscribe_url }}">{{ unsub }}</a></p>'
)
_FOOTER_TEXT = "\n--\n{{ program.name }}\n{{ unsub }}: {{ unsubscribe_url }}\n"


def _t(subject: str, body_html: str, body_text: str, unsub: str) -> dict[str, str]:
    footer_html = _FOOTER_HTML.replace("{{ unsub }}", unsub)
    footer_text = _FOOTER_TEXT.replace("{{ unsub }}", unsub)
    return {
        "subject": subject,
        "html": f"<!doctype html><html><body>{body_html}{footer_html}</body></html>",
        "text": body_text + footer_text,
    }


_EN_UNSUB = "Unsubscribe"
_DE_UNSUB = "Abmelden"

# template -> locale -> {subject, html, text}
BUILTIN: dict[str, dict[str, dict[str, str]]] = {
    "advocate_welcome": {
        "en": _t(
            "Welcome to {{ program.name }}: your referral link",
            "<p>Hi {{ recipient.name or 'there' }},</p>"
            "<p>Thanks for joining {{ program.name }}. Share your link with friends:</p>"
            '<p><a href="{{ advocate.link_url }}">{{ advocate.link_url }}</a></p>'
            "{% if advocate.code %}<p>Your code: <b>{{ advocate.code }}</b></p>{% endif %}",
            "Hi {{ recipient.name or 'there' }},\n\n"
            "Thanks for joining {{ program.name }}. Share your link with friends:\n"
            "{{ advocate.link_url }}\n"
            "{% if advocate.code %}Your code: {{ advocate.code }}\n{% endif %}",
            _EN_UNSUB,
        ),
        "de": _t(
            "Willkommen bei {{ program.name }}: Ihr Empfehlungslink",
            "<p>Hallo {{ recipient.name or '' }},</p>"
            "<p>Danke, dass Sie bei {{ program.name }} mitmachen. Teilen Sie Ihren Link:</p>"
            '<p><a href="{{ advocate.link_url }}">{{ advocate.link_url }}</a></p>'
            "{% if advocate.code %}<p>Ihr Code: <b>{{ advocate.code }}</b></p>{% endif %}",
            "Hallo {{ recipient.name or '' }},\n\n"
            "Danke, dass Sie bei {{ program.name }} mitmachen. Teilen Sie Ihren Link:\n"
            "{{ advocate.link_url }}\n"
            "{% if advocate.code %}Ihr Code: {{ advocate.code }}\n{% endif %}",
            _DE_UNSUB,
        ),
    },
    "invite": {
        "en": _t(
            "{{ advocate.name or 'A friend' }} invites you to {{ program.name }}",
            "<p>{{ advocate.name or 'A friend' }} thinks you'll like {{ program.name }}.</p>"
            "{% if invite.message %}<blockquote>{{ invite.message }}</blockquote>{% endif %}"
            '<p><a href="{{ advocate.link_url }}">Accept the invitation</a></p>',
            "{{ advocate.name or 'A friend' }} thinks you'll like {{ program.name }}.\n\n"
            '{% if invite.message %}"{{ invite.message }}"\n\n{% endif %}'
            "Accept the invitation: {{ advocate.link_url }}\n",
            _EN_UNSUB,
        ),
        "de": _t(
            "{{ advocate.name or 'Jemand' }} lädt Sie zu {{ program.name }} ein",
            "<p>{{ advocate.name or 'Jemand' }} meint, {{ program.name }} gefällt Ihnen.</p>"
            "{% if invite.message %}<blockquote>{{ invite.message }}</blockquote>{% endif %}"
            '<p><a href="{{ advocate.link_url }}">Einladung annehmen</a></p>',
            "{{ advocate.name or 'Jemand' }} meint, {{ program.name }} gefällt Ihnen.\n\n"
            '{% if invite.message %}"{{ invite.message }}"\n\n{% endif %}'
            "Einladung annehmen: {{ advocate.link_url }}\n",
            _DE_UNSUB,
        ),
    },
    "advocate_reward_pending": {
        "en": _t(
            "You earned {{ reward.amount }} with {{ program.name }}",
            "<p>Hi {{ recipient.name or 'there' }},</p>"
            "<p>A friend you referred converted: {{ reward.amount }} is on its way"
            "{% if reward.available_at %} and becomes available on {{ reward.available_at }}"
            "{% endif %}.</p>",
            "Hi {{ recipient.name or 'there' }},\n\n"
            "A friend you referred converted: {{ reward.amount }} is on its way"
            "{% if reward.available_at %} and becomes available on {{ reward.available_at }}"
            "{% endif %}.\n",
            _EN_UNSUB,
        ),
        "de": _t(
            "Sie haben {{ reward.amount }} bei {{ program.name }} verdient",
            "<p>Hallo {{ recipient.name or '' }},</p>"
            "<p>Eine Empfehlung hat gekauft: {{ reward.amount }} ist unterwegs"
            "{% if reward.available_at %} und ab {{ reward.available_at }} verfügbar"
            "{% endif %}.</p>",
            "Hallo {{ recipient.name or '' }},\n\n"
            "Eine Empfehlung hat gekauft: {{ reward.amount }} ist unterwegs"
            "{% if reward.available_at %} und ab {{ reward.available_at }} verfügbar"
            "{% endif %}.\n",
            _DE_UNSUB,
        ),
    },
    "advocate_reward_available": {
        "en": _t(
            "Your {{ reward.amount }} reward is available",
            "<p>Hi {{ recipient.name or 'there' }},</p>"
            "<p>Your reward of {{ reward.amount }} from {{ program.name }} is now available."
            "</p>",
            "Hi {{ recipient.name or 'there' }},\n\n"
            "Your reward of {{ reward.amount }} from {{ program.name }} is now available.\n",
            _EN_UNSUB,
        ),
        "de": _t(
            "Ihre Prämie von {{ reward.amount }} ist verfügbar",
            "<p>Hallo {{ recipient.name or '' }},</p>"
            "<p>Ihre Prämie von {{ reward.amount }} bei {{ program.name }} ist jetzt verfügbar."
            "</p>",
            "Hallo {{ recipient.name or '' }},\n\n"
            "Ihre Prämie von {{ reward.amount }} bei {{ program.name }} ist jetzt verfügbar.\n",
            _DE_UNSUB,
        ),
    },
    "friend_reward": {
        "en": _t(
            "Your welcome reward from {{ program.name }}",
            "<p>Welcome! Thanks to {{ advocate.name or 'your friend' }}, you get "
            "{{ reward.amount }} from {{ program.name }}.</p>",
            "Welcome! Thanks to {{ advocate.name or 'your friend' }}, you get "
            "{{ reward.amount }} from {{ program.name }}.\n",
            _EN_UNSUB,
        ),
        "de": _t(
            "Ihre Willkommensprämie von {{ program.name }}",
            "<p>Willkommen! Dank {{ advocate.name or 'Ihrer Empfehlung' }} erhalten Sie "
            "{{ reward.amount }} von {{ program.name }}.</p>",
            "Willkommen! Dank {{ advocate.name or 'Ihrer Empfehlung' }} erhalten Sie "
            "{{ reward.amount }} von {{ program.name }}.\n",
            _DE_UNSUB,
        ),
    },
    "friend_coupon": {
        "en": _t(
            "Your {{ program.name }} coupon",
            "<p>Welcome! Your coupon code is <b>{{ coupon.code }}</b>.</p>",
            "Welcome! Your coupon code is {{ coupon.code }}.\n",
            _EN_UNSUB,
        ),
        "de": _t(
            "Ihr Gutschein von {{ program.name }}",
            "<p>Willkommen! Ihr Gutscheincode lautet <b>{{ coupon.code }}</b>.</p>",
            "Willkommen! Ihr Gutscheincode lautet {{ coupon.code }}.\n",
            _DE_UNSUB,
        ),
    },
    "advocate_friend_converted": {
        "en": _t(
            "Thank you: a friend you referred {% if conversion.purchase %}just bought"
            "{% else %}just joined{% endif %}",
            "<p>Hi {{ recipient.name or 'there' }},</p>"
            "<p>Thank you! A friend you referred to {{ program.name }} "
            "{% if conversion.purchase %}just made their purchase{% else %}just joined{% endif %}."
            " Your reward is on its way.</p>",
            "Hi {{ recipient.name or 'there' }},\n\n"
            "Thank you! A friend you referred to {{ program.name }} "
            "{% if conversion.purchase %}just made their purchase{% else %}just joined{% endif %}."
            " Your reward is on its way.\n",
            _EN_UNSUB,
        ),
        "de": _t(
            "Danke: Ihre Empfehlung {% if conversion.purchase %}hat gekauft"
            "{% else %}ist dabei{% endif %}",
            "<p>Hallo {{ recipient.name or '' }},</p>"
            "<p>Danke! Eine Person, die Sie {{ program.name }} empfohlen haben, "
            "{% if conversion.purchase %}hat gerade gekauft{% else %}ist gerade beigetreten"
            "{% endif %}. Ihre Prämie ist unterwegs.</p>",
            "Hallo {{ recipient.name or '' }},\n\n"
            "Danke! Eine Person, die Sie {{ program.name }} empfohlen haben, "
            "{% if conversion.purchase %}hat gerade gekauft{% else %}ist gerade beigetreten"
            "{% endif %}. Ihre Prämie ist unterwegs.\n",
            _DE_UNSUB,
        ),
    },
    "friend_thank_you": {
        "en": _t(
            "Thank you for your first order at {{ program.name }}",
            "<p>Thank you for your first order at {{ program.name }}, and welcome!"
            " {{ advocate.name or 'Your friend' }} will be glad you came.</p>",
            "Thank you for your first order at {{ program.name }}, and welcome!"
            " {{ advocate.name or 'Your friend' }} will be glad you came.\n",
            _EN_UNSUB,
        ),
        "de": _t(
            "Danke für Ihre erste Bestellung bei {{ program.name }}",
            "<p>Danke für Ihre erste Bestellung bei {{ program.name }} und willkommen!"
            " {{ advocate.name or 'Ihre Empfehlung' }} wird sich freuen.</p>",
            "Danke für Ihre erste Bestellung bei {{ program.name }} und willkommen!"
            " {{ advocate.name or 'Ihre Empfehlung' }} wird sich freuen.\n",
            _DE_UNSUB,
        ),
    },
    "friend_share_prompt": {
        "en": _t(
            "Thanks for your order: now share {{ program.name }} yourself",
            "<p>Hi {{ recipient.name or 'there' }},</p>"
            "<p>Thanks for your order! You can now refer friends to {{ program.name }} too."
            " Your own link:</p>"
            '<p><a href="{{ advocate.link_url }}">{{ advocate.link_url }}</a></p>',
            "Hi {{ recipient.name or 'there' }},\n\n"
            "Thanks for your order! You can now refer friends to {{ program.name }} too."
            " Your own link:\n{{ advocate.link_url }}\n",
            _EN_UNSUB,
        ),
        "de": _t(
            "Danke für Ihre Bestellung: empfehlen Sie {{ program.name }} jetzt selbst",
            "<p>Hallo {{ recipient.name or '' }},</p>"
            "<p>Danke für Ihre Bestellung! Sie können {{ program.name }} jetzt auch empfehlen."
            " Ihr eigener Link:</p>"
            '<p><a href="{{ advocate.link_url }}">{{ advocate.link_url }}</a></p>',
            "Hallo {{ recipient.name or '' }},\n\n"
            "Danke für Ihre Bestellung! Sie können {{ program.name }} jetzt auch empfehlen."
            " Ihr eigener Link:\n{{ advocate.link_url }}\n",
            _DE_UNSUB,
        ),
    },
    "advocate_share_reminder": {
        "en": _t(
            "Your {{ program.name }} link is waiting to be shared",
            "<p>Hi {{ recipient.name or 'there' }},</p>"
            "<p>You joined {{ program.name }} but have not shared your link yet."
            " Friends who use it get their reward, and so do you:</p>"
            '<p><a href="{{ advocate.link_url }}">{{ advocate.link_url }}</a></p>',
            "Hi {{ recipient.name or 'there' }},\n\n"
            "You joined {{ program.name }} but have not shared your link yet."
            " Friends who use it get their reward, and so do you:\n{{ advocate.link_url }}\n",
            _EN_UNSUB,
        ),
        "de": _t(
            "Ihr {{ program.name }}-Link wartet darauf, geteilt zu werden",
            "<p>Hallo {{ recipient.name or '' }},</p>"
            "<p>Sie sind bei {{ program.name }} dabei, haben Ihren Link aber noch nicht geteilt."
            " Wer ihn nutzt, erhält eine Prämie, und Sie auch:</p>"
            '<p><a href="{{ advocate.link_url }}">{{ advocate.link_url }}</a></p>',
            "Hallo {{ recipient.name or '' }},\n\n"
            "Sie sind bei {{ program.name }} dabei, haben Ihren Link aber noch nicht geteilt."
            " Wer ihn nutzt, erhält eine Prämie, und Sie auch:\n{{ advocate.link_url }}\n",
            _DE_UNSUB,
        ),
    },
    "milestone_reached": {
        "en": _t(
            "You reached {{ milestone.milestone }} referrals!",
            "<p>Hi {{ recipient.name or 'there' }},</p>"
            "<p>{{ milestone.referral_count }} friends joined {{ program.name }} through you."
            "{% if milestone.bonus %} Your bonus: {{ milestone.bonus }}.{% endif %}</p>",
            "Hi {{ recipient.name or 'there' }},\n\n"
            "{{ milestone.referral_count }} friends joined {{ program.name }} through you."
            "{% if milestone.bonus %} Your bonus: {{ milestone.bonus }}.{% endif %}\n",
            _EN_UNSUB,
        ),
        "de": _t(
            "{{ milestone.milestone }} Empfehlungen erreicht!",
            "<p>Hallo {{ recipient.name or '' }},</p>"
            "<p>{{ milestone.referral_count }} Freunde sind über Sie zu {{ program.name }} "
            "gekommen.{% if milestone.bonus %} Ihr Bonus: {{ milestone.bonus }}.{% endif %}</p>",
            "Hallo {{ recipient.name or '' }},\n\n"
            "{{ milestone.referral_count }} Freunde sind über Sie zu {{ program.name }} "
            "gekommen.{% if milestone.bonus %} Ihr Bonus: {{ milestone.bonus }}.{% endif %}\n",
            _DE_UNSUB,
        ),
    },
}
