"""Text from outside (listings, seller statements, the LLM's answers) shown as it is.

Autoescaping keeps markup inert, but invisible characters stay invisible: a right-to-left
override reorders what a moderator reads ("gnp.exe" shows as "exe.png"), zero-width characters
split words that keyword rules would catch. `reveal_hidden` escapes the text and shows each
such character as a visible, named marker.
"""

import re
import unicodedata

from django import template
from django.utils.html import conditional_escape
from django.utils.safestring import mark_safe

register = template.Library()

# bidi embeddings, overrides and isolates; zero-width and other invisible format characters
HIDDEN = re.compile(
    "[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)


def _marker(match: re.Match) -> str:
    char = match.group()
    name = unicodedata.name(char, "FORMAT CHARACTER").lower()
    return f'<span class="hidden-char" title="{name}">U+{ord(char):04X}</span>'


@register.filter(needs_autoescape=True)
def reveal_hidden(value, autoescape=True):
    text = conditional_escape(value) if autoescape else str(value)
    return mark_safe(HIDDEN.sub(_marker, str(text)))
