"""WSGI entry point for gunicorn: Keystone's module parses sys.argv with oslo.config, which would reject gunicorn's
own arguments, so hide them; the configuration comes from OS_KEYSTONE_CONFIG_FILES."""
import sys

sys.argv = sys.argv[:1]

from keystone.wsgi.api import application  # noqa: E402,F401
