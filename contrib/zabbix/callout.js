// callout webhook media type for Zabbix 6.0 and later.
// Sends trigger (and service) events to callout's generic event intake,
// POST /v1/intake/events, with PagerDuty Events v2 semantics:
// a problem is "trigger", its recovery "resolve", an acknowledgement
// made in Zabbix "acknowledge". The dedup key is the problem's event id,
// so the recovery closes exactly the incident its problem opened.
// Zabbix runs this in Duktape (ECMAScript 5.1): no let, const or arrows.
var Callout = {
    params: {},

    // An unresolved macro arrives as its own text, e.g. "{EVENT.TAGSJSON}".
    value: function (name) {
        var v = Callout.params[name];
        if (typeof v !== 'string') {
            return '';
        }
        v = v.trim();
        if (/^\{[A-Z0-9_.$]+\}$/.test(v)) {
            return '';
        }
        return v;
    },

    required: function (name) {
        var v = Callout.value(name);
        if (v === '') {
            throw 'parameter "' + name + '" is empty';
        }
        return v;
    },

    // Zabbix's numeric severity, 0 (not classified) to 5 (disaster), in
    // the words callout's rules match on.
    severity: function () {
        var words = ['info', 'info', 'warning', 'minor', 'major', 'critical'];
        var n = parseInt(Callout.value('event_nseverity'), 10);
        if (isNaN(n) || n < 0 || n > 5) {
            return 'warning';
        }
        return words[n];
    },

    // trigger, resolve, acknowledge, or '' for an update that is neither
    // (a comment, a severity change): nothing to tell callout then.
    action: function () {
        if (Callout.value('event_update_status') === '1') {
            var what = Callout.value('event_update_action').toLowerCase();
            if (what.indexOf('acknowledged') !== -1 && what.indexOf('unacknowledged') === -1) {
                return 'acknowledge';
            }
            return '';
        }
        if (Callout.value('event_value') === '0') {
            return 'resolve';
        }
        if (Callout.value('event_value') === '1') {
            return 'trigger';
        }
        throw 'parameter "event_value" must be 0 or 1, not "' + Callout.value('event_value') + '"';
    },

    details: function () {
        var d = {
            host: Callout.required('host'),
            zabbix_event_id: Callout.required('event_id'),
            zabbix_trigger_id: Callout.value('trigger_id'),
            zabbix_host_name: Callout.value('host_name'),
            zabbix_host_ip: Callout.value('host_ip')
        };
        var tags = Callout.value('event_tags');
        if (tags !== '') {
            var list;
            try {
                list = JSON.parse(tags);
            } catch (e) {
                throw 'parameter "event_tags" is not JSON: ' + e;
            }
            for (var i = 0; i < list.length; i++) {
                // Tags become labels (a tag "contract" picks the contract);
                // callout checks names and lengths like any other label.
                if (list[i] && typeof list[i].tag === 'string' && !(list[i].tag in d)) {
                    d[list[i].tag] = String(list[i].value || '');
                }
            }
        }
        for (var k in d) {
            if (d[k] === '') {
                delete d[k];
            }
        }
        return d;
    },

    body: function (action) {
        var b = {
            event_action: action,
            dedup_key: 'zabbix-' + Callout.required('event_id'),
            client: 'Zabbix'
        };
        var contract = Callout.value('contract');
        if (contract !== '') {
            b.routing_key = contract;
        }
        var zurl = Callout.value('zabbix_url');
        var trigger = Callout.value('trigger_id');
        if (zurl !== '' && trigger !== '') {
            b.client_url = zurl.replace(/\/+$/, '') + '/tr_events.php?triggerid=' +
                encodeURIComponent(trigger) + '&eventid=' + encodeURIComponent(Callout.required('event_id'));
        }
        if (action === 'trigger') {
            b.payload = {
                summary: Callout.required('event_name'),
                source: Callout.required('host'),
                severity: Callout.severity(),
                class: Callout.required('event_name'),
                custom_details: Callout.details()
            };
        }
        return b;
    },

    send: function (body) {
        var req = new HttpRequest();
        var proxy = Callout.value('http_proxy');
        if (proxy !== '') {
            req.setProxy(proxy);
        }
        req.addHeader('Content-Type: application/json');
        req.addHeader('Authorization: Bearer ' + Callout.required('token'));
        var resp = req.post(Callout.required('url'), JSON.stringify(body));
        var status = req.getStatus();
        if (status === 202) {
            return resp;
        }
        var detail = '';
        try {
            var problem = JSON.parse(resp);
            detail = problem.detail || problem.title || '';
        } catch (e) {
            detail = String(resp || '').substring(0, 200);
        }
        if (status === 0) {
            throw 'no answer from ' + Callout.required('url') + ' (' + detail + ')';
        }
        throw 'callout answered ' + status + ': ' + detail;
    }
};

try {
    Callout.params = JSON.parse(value);
    var action = Callout.action();
    if (action === '') {
        Zabbix.log(4, '[callout] event ' + Callout.value('event_id') + ': update with nothing to send');
        return 'OK';
    }
    var source = Callout.value('event_source');
    if (source !== '' && source !== '0' && source !== '4') {
        throw 'only trigger (0) and service (4) events can be sent, not event source ' + source;
    }
    Callout.send(Callout.body(action));
    Zabbix.log(4, '[callout] event ' + Callout.value('event_id') + ': ' + action + ' accepted');
    return 'OK';
} catch (error) {
    Zabbix.log(3, '[callout] sending failed: ' + error);
    throw 'callout: ' + error;
}
