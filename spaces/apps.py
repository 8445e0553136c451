from django.apps import AppConfig
from django.db.models.signals import post_migrate


class SpacesConfig(AppConfig):
    name = "spaces"
    verbose_name = "Spaces"

    def ready(self):
        from .roles import sync_roles_after_migrate

        # Roles follow the code: after every migrate (and test flush) the groups get exactly
        # the permissions declared in roles.py, including those of models added later.
        post_migrate.connect(sync_roles_after_migrate, dispatch_uid="spaces.sync_roles")
