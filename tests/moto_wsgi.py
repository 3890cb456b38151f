"""moto's S3 (every service moto has) as a WSGI application, for a server that keeps
connections alive: ``moto_server``'s werkzeug closes every connection after one response,
which a cloud endpoint does not (``tests.s3_support.MotoServer(keep_alive=True)``)."""

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

application = DomainDispatcherApplication(create_backend_app)
