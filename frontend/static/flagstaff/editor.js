/* Flagstaff editor: small progressive enhancements (the pages work without JavaScript).
 *
 * - the rollout slider and the exact number field follow each other;
 * - the kill switch asks for confirmation;
 * - live updates (`Flagstaff.live`): toggles follow changes made elsewhere, and
 *   the flag page says when its flag was changed by someone else.
 */
(function () {
  "use strict";

  function syncRollout() {
    document.querySelectorAll("form.rollout").forEach(function (form) {
      var slider = form.querySelector("input[type=range]");
      var number = form.querySelector("input[type=number]");
      if (!slider || !number) return;
      slider.addEventListener("input", function () { number.value = slider.value; });
      number.addEventListener("input", function () {
        if (number.value !== "" && !isNaN(Number(number.value))) slider.value = number.value;
      });
    });
  }

  function confirmKillSwitch() {
    document.querySelectorAll("form.kill-switch").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm || "Turn this flag off everywhere?")) {
          event.preventDefault();
        }
      });
    });
  }

  /* Live updates over /ws/v1/flags/ (docs/websocket-protocol.md). The flag list
   * follows every environment it shows and flips its toggles as changes arrive;
   * the flag page follows its flag's environments from the revisions it loaded
   * and, when someone else changes the flag, flips that toggle and says so (its
   * forms keep the loaded revision: a save after a remote change comes back as
   * a conflict, never an overwrite). */
  var live = {
    socket: null,
    url: "/ws/v1/flags/",
    setSwitch: function (scope, on) {
      var button = scope.querySelector("button.switch");
      var input = scope.querySelector('input[name="on"]');
      if (!button || !input) return;
      button.classList.toggle("on", on);
      button.classList.toggle("off", !on);
      button.setAttribute("aria-pressed", on ? "true" : "false");
      button.textContent = on ? "On" : "Off";
      input.value = on ? "false" : "true";
    },
    notify: function (text) {
      var notice = document.getElementById("live-notice");
      if (!notice) return;
      notice.textContent = text;
      notice.hidden = false;
    },
    subscriptions: function () {
      var hook = document.getElementById("live-hook");
      var subs = [];
      if (hook) {
        document.querySelectorAll("table.envs tr[data-environment]").forEach(function (row) {
          subs.push({ project: hook.dataset.project, environment: row.dataset.environment,
                      since_revision: Number(row.dataset.revision) || null });
        });
        return { flag: hook.dataset.flag, selected: hook.dataset.environment, subs: subs };
      }
      var table = document.querySelector("table[data-live-project]");
      if (!table) return null;
      var seen = {};
      table.querySelectorAll("td[data-environment]").forEach(function (cell) {
        var env = cell.dataset.environment;
        if (!seen[env]) {
          seen[env] = true;
          subs.push({ project: table.dataset.liveProject, environment: env, since_revision: null });
        }
      });
      return { flag: null, selected: null, subs: subs };
    },
    apply: function (page, msg) {
      (msg.changes || []).forEach(function (change) {
        if (change.kind !== "flag") return;
        if (page.flag && change.flag !== page.flag) return;
        var on = !!(change.doc && change.doc.on === true);
        if (page.flag) {
          var row = document.querySelector('table.envs tr[data-environment="' + msg.environment + '"]');
          if (row) {
            live.setSwitch(row, on);
            row.dataset.revision = String(msg.revision);
            var rev = row.querySelector(".revision");
            if (rev) rev.textContent = "r" + msg.revision + " (changed)";
            showWhoChanged(row, change, msg);
          }
          if (msg.environment === page.selected) {
            var who = " by " + changedBy(change, msg);
            live.notify("This flag was changed in " + msg.environment + who + " (revision r" +
                        msg.revision + "). Reload to see the change; saving now shows a conflict.");
            document.body.dataset.liveRevision = String(msg.revision);
          }
        } else {
          var cell = document.querySelector('tr[data-flag="' + change.flag + '"] td[data-environment="' +
                                            msg.environment + '"]');
          if (cell) live.setSwitch(cell, on);
          showWhoChanged(document.querySelector('tr[data-flag="' + change.flag + '"]'), change, msg);
        }
      });
    },
    /* A snapshot (after a compaction or a server-side resync) replaces what the page
     * knew: the toggles follow it; the flag page's notice is left to real events. */
    snapshot: function (page, msg) {
      Object.keys(msg.flags || {}).forEach(function (name) {
        if (page.flag && name !== page.flag) return;
        var doc = msg.flags[name];
        var on = !!(doc && doc.on === true);
        var scope = page.flag
          ? document.querySelector('table.envs tr[data-environment="' + msg.environment + '"]')
          : document.querySelector('tr[data-flag="' + name + '"] td[data-environment="' + msg.environment + '"]');
        if (scope) live.setSwitch(scope, on);
      });
    },
    /* The websocket plumbing is Flagstaff.LiveStream (flagstaff-client.js): it resumes
     * from the last revision after a reconnect, with backoff and a heartbeat timeout. */
    connect: function () {
      var page = live.subscriptions();
      if (!page || !page.subs.length || !window.WebSocket || !window.Flagstaff ||
          !window.Flagstaff.LiveStream) return null;
      var stream = new window.Flagstaff.LiveStream({ path: live.url, subscriptions: page.subs });
      stream.on("event", function (msg) { live.apply(page, msg); });
      stream.on("snapshot", function (msg) { live.snapshot(page, msg); });
      stream.on("subscribed", function () { document.body.dataset.live = "subscribed"; });
      stream.on("status", function (state) {
        if (state !== "ready") document.body.dataset.live = state === "stale" ? "reconnecting" : state;
      });
      live.socket = stream;
      return stream;
    }
  };
  window.Flagstaff = window.Flagstaff || {};
  window.Flagstaff.live = live;

  /* Who made a live change: the document's platform-stamped `updated_by`
   * (docs/flags.md), else the event's actor, else "someone else". */
  function changedBy(change, msg) {
    var doc = change && change.doc;
    if (doc && typeof doc.updated_by === "string" && doc.updated_by) return doc.updated_by;
    return msg.actor || "someone else";
  }

  /* Show "changed by <who>" in a flag list row (.last-change) or an environment
   * row of the flag page (.updated-by), as text (never markup). */
  function showWhoChanged(scope, change, msg) {
    if (!scope) return;
    var who = changedBy(change, msg);
    var last = scope.querySelector(".last-change");
    if (last) {
      last.textContent = "changed by ";
      var span = document.createElement("span");
      span.className = "updated-by";
      span.textContent = who;
      last.appendChild(span);
      last.appendChild(document.createTextNode(" in " + msg.environment));
      last.classList.add("live");
      return;
    }
    var cell = scope.querySelector(".revision");
    if (!cell) return;
    var by = scope.querySelector(".updated-by");
    if (!by) {
      by = document.createElement("span");
      by.className = "updated-by";
      cell.parentNode.appendChild(document.createTextNode(" "));
      cell.parentNode.appendChild(by);
    }
    by.textContent = "by " + who;
  }

  /* Rules reorder by dragging too (the up/down buttons work without JavaScript):
   * dropping a rule on another puts it in that place and saves the new order
   * through the hidden form, which carries the revision the page loaded. */
  function dragRules() {
    var form = document.querySelector("form.rules-order");
    var list = document.querySelector("ol.rules");
    if (!form || !list) return;
    var dragged = null;
    list.querySelectorAll("li.rule[data-rule-id]").forEach(function (item) {
      item.setAttribute("draggable", "true");
      item.addEventListener("dragstart", function (event) {
        dragged = item;
        item.classList.add("dragging");
        if (event.dataTransfer) {
          event.dataTransfer.effectAllowed = "move";
          event.dataTransfer.setData("text/plain", item.dataset.ruleId);
        }
      });
      item.addEventListener("dragend", function () {
        item.classList.remove("dragging");
        list.querySelectorAll(".drop-target").forEach(function (el) { el.classList.remove("drop-target"); });
      });
      item.addEventListener("dragover", function (event) {
        if (!dragged || dragged === item) return;
        event.preventDefault();
        item.classList.add("drop-target");
      });
      item.addEventListener("dragleave", function () { item.classList.remove("drop-target"); });
      item.addEventListener("drop", function (event) {
        event.preventDefault();
        if (!dragged || dragged === item) return;
        var items = Array.prototype.slice.call(list.querySelectorAll("li.rule[data-rule-id]"));
        var from = items.indexOf(dragged), to = items.indexOf(item);
        list.insertBefore(dragged, from < to ? item.nextSibling : item);
        form.querySelectorAll('input[name="order"]').forEach(function (el) { el.remove(); });
        list.querySelectorAll("li.rule[data-rule-id]").forEach(function (rule) {
          var input = document.createElement("input");
          input.type = "hidden";
          input.name = "order";
          input.value = rule.dataset.ruleId;
          form.appendChild(input);
        });
        form.submit();
      });
    });
  }

  /* The config tree: expand/collapse all folders; deleting a key asks first. */
  function configTree() {
    document.querySelectorAll("button.expand-all, button.collapse-all").forEach(function (button) {
      button.addEventListener("click", function () {
        var open = button.classList.contains("expand-all");
        document.querySelectorAll("ul.config-tree details").forEach(function (d) { d.open = open; });
      });
    });
    document.querySelectorAll("form.config-delete").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.dataset.confirm || "Delete this key?")) event.preventDefault();
      });
    });
  }

  function start() { syncRollout(); confirmKillSwitch(); dragRules(); configTree(); live.connect(); }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
