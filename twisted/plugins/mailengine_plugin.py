# The twistd plugin: `twistd -n mailengine` (foreground), `twistd mailengine` (daemon).
# Kept tiny: every twistd run imports every plugin module.
from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from zope.interface import implementer

from mailengine.options import Options


@implementer(IServiceMaker, IPlugin)
class MailEngineServiceMaker:
    tapname = "mailengine"
    description = "MailEngine: high-volume relay MTA (SMTP in, queue, parallel SMTP out)"
    options = Options

    def makeService(self, options):
        from mailengine.service import makeService

        return makeService(options)


serviceMaker = MailEngineServiceMaker()
