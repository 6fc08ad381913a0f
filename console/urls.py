from django.contrib.auth import views as auth_views
from django.urls import path

from console.views import (
    alerts,
    approvals,
    audit,
    bulk,
    compensation,
    conflicts,
    overview,
    preferences,
    reconcile,
    replay,
    shadow,
    tenants,
    writes,
)

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="registration/login.html", redirect_authenticated_user=True
        ),
        name="console-login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="console-logout"),
    path("preferences/timezone", preferences.set_timezone, name="console-set-timezone"),
    path("preferences/timezone/detect", preferences.detect_timezone, name="console-detect-timezone"),
    path("", overview.overview, name="console-overview"),
    # The write ledger
    path("writes/", writes.write_list, name="console-writes"),
    path("writes/<uuid:uid>/", writes.write_detail, name="console-write"),
    path("writes/<uuid:uid>/plan", writes.write_plan_view, name="console-write-plan"),
    path("writes/<uuid:uid>/chart", approvals.write_chart, name="console-write-chart"),
    path("writes/<uuid:uid>/approve", approvals.approve, name="console-write-approve"),
    path("writes/<uuid:uid>/reject", approvals.reject, name="console-write-reject"),
    path("writes/<uuid:uid>/rollback", compensation.rollback, name="console-write-rollback"),
    path(
        "writes/<uuid:uid>/rollback/confirm",
        compensation.rollback_confirm,
        name="console-write-rollback-confirm",
    ),
    path("writes/<uuid:uid>/correction", compensation.correction, name="console-write-correction"),
    path(
        "writes/<uuid:uid>/correction/confirm",
        compensation.correction_confirm,
        name="console-write-correction-confirm",
    ),
    path("writes/<uuid:uid>/replay", replay.replay_form, name="console-write-replay-form"),
    path("writes/<uuid:uid>/replay/run", replay.replay, name="console-write-replay"),
    path("writes/<uuid:uid>/test-replay", replay.test_replay, name="console-write-test-replay"),
    path(
        "writes/<uuid:uid>/test-replays/",
        replay.test_replay_comparison,
        name="console-write-test-replays",
    ),
    path("writes/<uuid:uid>/resolve", replay.resolve, name="console-write-resolve"),
    path("writes/<uuid:uid>/export", audit.write_export_view, name="console-write-export"),
    path("bulk/preview", bulk.bulk_preview, name="console-bulk-preview"),
    path("bulk/start", bulk.bulk_start, name="console-bulk-start"),
    path("bulk/<uuid:uid>/", bulk.bulk_detail, name="console-bulk"),
    path("bulk/<uuid:uid>/abort", bulk.bulk_abort_view, name="console-bulk-abort"),
    # Work queues
    path("approvals/", approvals.approval_queue, name="console-approvals"),
    path("conflicts/", conflicts.conflict_list, name="console-conflicts"),
    path("conflicts/<uuid:uid>/", conflicts.conflict_detail, name="console-conflict"),
    path("conflicts/<uuid:uid>/preview", conflicts.conflict_preview_view, name="console-conflict-preview"),
    path("conflicts/<uuid:uid>/resolve", conflicts.conflict_resolve_view, name="console-conflict-resolve"),
    path("tasks/", compensation.task_list, name="console-tasks"),
    path("tasks/<uuid:uid>/confirm", compensation.task_confirm, name="console-task-confirm"),
    path("alerts/", alerts.alert_list, name="console-alerts"),
    path("alerts/<uuid:uid>/", alerts.alert_detail, name="console-alert"),
    path("alerts/<uuid:uid>/acknowledge", alerts.alert_ack, name="console-alert-ack"),
    path("reconciliation/", reconcile.reconciliation, name="console-reconciliation"),
    path(
        "reconciliation/<uuid:uid>/<str:action>",
        reconcile.finding_action,
        name="console-finding-action",
    ),
    path("alerts/<uuid:uid>/resolve", alerts.alert_resolve_view, name="console-alert-resolve"),
    path("alert-routes/", alerts.alert_routes, name="console-alert-routes"),
    path("alert-routes/add", alerts.alert_route_add_view, name="console-alert-route-add"),
    path(
        "alert-routes/<slug:slug>/remove", alerts.alert_route_remove_view, name="console-alert-route-remove"
    ),
    # Configuration
    path("tenants/", tenants.tenant_list, name="console-tenants"),
    path("tenants/<slug:slug>/", tenants.tenant_detail, name="console-tenant"),
    path("tenants/<slug:slug>/mode", tenants.tenant_mode, name="console-tenant-mode"),
    path("tenants/<slug:slug>/discover", tenants.tenant_discover, name="console-tenant-discover"),
    path(
        "tenants/<slug:slug>/practitioners", tenants.tenant_practitioner, name="console-tenant-practitioner"
    ),
    path(
        "tenants/<slug:slug>/author-policy", tenants.tenant_author_policy, name="console-tenant-author-policy"
    ),
    path("tenants/<slug:slug>/capabilities", tenants.capability_request, name="console-capability-request"),
    path(
        "capability-changes/<uuid:uid>/approve", tenants.capability_approve, name="console-capability-approve"
    ),
    path("capability-changes/<uuid:uid>/reject", tenants.capability_reject, name="console-capability-reject"),
    path("tenants/<slug:slug>/policy", tenants.policy_request, name="console-policy-request"),
    path("policy-changes/<uuid:uid>/approve", tenants.policy_approve, name="console-policy-approve"),
    path("policy-changes/<uuid:uid>/reject", tenants.policy_reject, name="console-policy-reject"),
    path("kill-switches/engage", tenants.killswitch_engage, name="console-killswitch-engage"),
    path("kill-switches/<uuid:uid>/release", tenants.killswitch_release, name="console-killswitch-release"),
    # Oversight
    path("audit/", audit.audit_log, name="console-audit"),
    path("audit/verify", audit.audit_verify, name="console-audit-verify"),
    path("shadow/", shadow.shadow_report, name="console-shadow"),
]
