"""The REST API's request and response shapes (DRF serializers; drf-spectacular reads them).

Request serializers check types only; the rules (key syntax, name length,
the flag document schema, rollout bounds) are the actions', so every door
reports the same messages. Free text is never trimmed or escaped here:
``trim_whitespace=False`` everywhere, and markup is stored as typed.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from flags.records import FlagOverview, FlagState


def _text(**kwargs: Any) -> serializers.CharField:
    return serializers.CharField(trim_whitespace=False, **kwargs)


class ReasonField(serializers.CharField):
    """Why the change is made: recorded with it in the core's audit trail."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, allow_blank=True, max_length=1000,
                         trim_whitespace=False, **kwargs)


def _revision(**kwargs: Any) -> serializers.IntegerField:
    return serializers.IntegerField(min_value=0, **kwargs)


# -- responses -------------------------------------------------------------------------------


class ProjectSerializer(serializers.Serializer):
    key = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    created_at = serializers.CharField()
    updated_at = serializers.CharField()
    updated_by = serializers.CharField(help_text="Who made the last change (user:<name>); may be empty.")
    revision = serializers.IntegerField(help_text="The core mod_revision of the project record.")


class EnvironmentSerializer(serializers.Serializer):
    project = serializers.CharField()
    key = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    created_at = serializers.CharField()
    updated_at = serializers.CharField()
    updated_by = serializers.CharField(help_text="Who made the last change (user:<name>); may be empty.")
    revision = serializers.IntegerField()


class FlagStateSerializer(serializers.Serializer):
    project = serializers.CharField()
    environment = serializers.CharField()
    key = serializers.CharField()
    document = serializers.JSONField(help_text="The flag document (see flags.engine's schema).")
    revision = serializers.IntegerField(
        help_text="The core mod_revision of this document: send it back as expected_revision."
    )


class FlagEnvironmentSummarySerializer(serializers.Serializer):
    on = serializers.BooleanField()
    revision = serializers.IntegerField()
    version = serializers.IntegerField(allow_null=True)
    updated_at = serializers.CharField(allow_null=True)
    updated_by = serializers.CharField(allow_null=True, help_text="Who made the last change.")


def flag_summary(state: FlagState) -> dict[str, Any]:
    doc = state.document
    version = doc.get("version")
    updated = doc.get("updated_at")
    updated_by = doc.get("updated_by")
    return {
        "on": state.on,
        "revision": state.revision,
        "version": version if isinstance(version, int) else None,
        "updated_at": updated if isinstance(updated, str) else None,
        "updated_by": updated_by if isinstance(updated_by, str) else None,
    }


class FlagOverviewSerializer(serializers.Serializer):
    """A flag across environments: what the flag list shows."""

    key = serializers.CharField()
    name = serializers.SerializerMethodField()
    description = serializers.SerializerMethodField()
    kind = serializers.SerializerMethodField()
    tags = serializers.SerializerMethodField()
    temporary = serializers.SerializerMethodField()
    environments = serializers.SerializerMethodField()

    def get_name(self, o: FlagOverview) -> str:
        return o.primary.name

    def get_description(self, o: FlagOverview) -> str:
        value = o.primary.document.get("description")
        return value if isinstance(value, str) else ""

    def get_kind(self, o: FlagOverview) -> str | None:
        value = o.primary.document.get("kind")
        return value if isinstance(value, str) else None

    def get_tags(self, o: FlagOverview) -> list[str]:
        return o.primary.tags

    def get_temporary(self, o: FlagOverview) -> bool:
        return o.primary.document.get("temporary") is True

    def get_environments(self, o: FlagOverview) -> dict[str, dict[str, Any]]:
        return {env: flag_summary(state) for env, state in o.states.items()}


class FlagDetailSerializer(serializers.Serializer):
    """A flag in every environment: documents and revisions by environment."""

    project = serializers.CharField()
    key = serializers.CharField()
    environments = serializers.SerializerMethodField()

    def get_environments(self, o: FlagOverview) -> dict[str, dict[str, Any]]:
        return {env: {"document": s.document, "revision": s.revision} for env, s in o.states.items()}


class SegmentSerializer(serializers.Serializer):
    project = serializers.CharField()
    environment = serializers.CharField()
    key = serializers.CharField()
    document = serializers.JSONField()
    revision = serializers.IntegerField()


class ConfigEntrySerializer(serializers.Serializer):
    path = serializers.CharField()
    value = serializers.CharField(help_text="UTF-8 text, or base64 when encoding is 'base64'.")
    encoding = serializers.ChoiceField(choices=["utf-8", "base64"])
    revision = serializers.IntegerField()
    version = serializers.IntegerField()


class ErrorItemSerializer(serializers.Serializer):
    field = serializers.CharField(allow_null=True)
    message = serializers.CharField()


class ErrorSerializer(serializers.Serializer):
    errors = ErrorItemSerializer(many=True)


class ConflictCurrentSerializer(serializers.Serializer):
    document = serializers.JSONField(allow_null=True)
    revision = serializers.IntegerField()


class ConflictSerializer(ErrorSerializer):
    current = ConflictCurrentSerializer()


class ChangeSerializer(serializers.Serializer):
    path = serializers.CharField(help_text="The field, e.g. rules[id=beta].clauses[0].values "
                                           "(empty: the whole document).")
    op = serializers.ChoiceField(choices=["added", "removed", "changed", "reordered"])
    before = serializers.JSONField(allow_null=True)
    after = serializers.JSONField(allow_null=True)


class VersionSerializer(serializers.Serializer):
    revision = serializers.IntegerField(help_text="The core mod_revision that wrote this version.")
    version = serializers.IntegerField(help_text="The core's version counter of the key.")
    document = serializers.JSONField(allow_null=True)
    updated_by = serializers.CharField(help_text="Who wrote it (the document's updated_by).")
    updated_at = serializers.CharField()
    previous = serializers.ChoiceField(
        choices=["shown", "created", "compacted", "next_page"],
        help_text="What 'changes' compares with: the next older version (shown or on the next "
                  "page), nothing (this version created the flag), or nothing because the older "
                  "version was compacted away.")
    changes = ChangeSerializer(many=True)


class HistorySerializer(serializers.Serializer):
    key = serializers.CharField()
    versions = VersionSerializer(many=True)
    next_before = serializers.IntegerField(
        allow_null=True, help_text="Pass as ?before= for the next (older) page; null: no more.")
    compacted = serializers.BooleanField(
        help_text="Older versions existed but the core compacted them away.")


class EvaluationSerializer(serializers.Serializer):
    value = serializers.JSONField()
    variation = serializers.IntegerField(allow_null=True)
    reason = serializers.JSONField()
    document_errors = ErrorItemSerializer(many=True)


# -- requests --------------------------------------------------------------------------------


class EnvironmentInputSerializer(serializers.Serializer):
    key = _text()
    name = _text(required=False)
    description = _text(required=False, allow_blank=True)


class ProjectCreateSerializer(serializers.Serializer):
    key = _text()
    name = _text()
    description = _text(required=False, allow_blank=True, default="")
    environments = EnvironmentInputSerializer(many=True, required=False)
    reason = ReasonField()


class ProjectUpdateSerializer(serializers.Serializer):
    name = _text(required=False)
    description = _text(required=False, allow_blank=True)
    expected_revision = _revision(required=False)
    reason = ReasonField()


class EnvironmentCreateSerializer(serializers.Serializer):
    key = _text()
    name = _text()
    description = _text(required=False, allow_blank=True, default="")
    copy_from = _text(required=False, allow_null=True, default=None,
                      help_text="Copy flags and segments from this environment (default: the first).")
    reason = ReasonField()


class DocumentCreateSerializer(serializers.Serializer):
    document = serializers.JSONField()
    reason = ReasonField()


class DocumentUpdateSerializer(serializers.Serializer):
    document = serializers.JSONField()
    expected_revision = _revision(help_text="The revision the document was loaded at.")
    reason = ReasonField()


class ToggleSerializer(serializers.Serializer):
    on = serializers.BooleanField()
    expected_revision = _revision(required=False, allow_null=True, default=None)
    reason = ReasonField()


class RolloutSerializer(serializers.Serializer):
    percentage = serializers.JSONField(
        required=False, default=None,
        help_text="0-100 in steps of 0.001: the share of contexts served true (boolean flags).")
    weights = serializers.JSONField(
        required=False, default=None,
        help_text="[{variation, weight}] with weights in 0.001% units adding up to 100000.")
    expected_revision = _revision(required=False, allow_null=True, default=None)
    reason = ReasonField()


class ReorderRulesSerializer(serializers.Serializer):
    order = serializers.ListField(child=_text(), allow_empty=True,
                                  help_text="Every rule id of the flag, in the new order.")
    expected_revision = _revision(help_text="The revision the rules were loaded at.")
    reason = ReasonField()


class CopySettingsSerializer(serializers.Serializer):
    source_environment = _text()
    target_environment = _text()
    include_on = serializers.BooleanField(default=True)
    expected_revision = _revision(
        required=False, allow_null=True, default=None,
        help_text="The target environment's revision as loaded.")
    reason = ReasonField()


class KillSwitchSerializer(serializers.Serializer):
    reason = ReasonField()


class EvaluateSerializer(serializers.Serializer):
    context = serializers.JSONField(help_text='The evaluation context, e.g. {"key": "user-1"}.')
    document = serializers.JSONField(
        required=False, default=None,
        help_text="A draft document to evaluate instead of the stored one (the editor's preview).")


class ConfigPutSerializer(serializers.Serializer):
    value = _text(allow_blank=True)
    expected_revision = _revision(required=False, allow_null=True, default=None,
                                  help_text="0: the key must not exist yet.")
    reason = ReasonField()
