// Card wallet: browser side. Talks only to the local JSON API of the wallet program.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);

  const state = {
    currency: '', storeName: '', card: null, // card: {present, card_id, balance}, null = unknown
    items: [], cart: new Map(), cartStore: null, // cart: sku -> quantity, one member store per order
    bill: null, settlement: null, chargeAmount: 0, charge: null,
    screen: 'shop', area: 'shop', inflight: 0, pollTimer: 0, errorBack: 'shop', errorRetry: null,
    addButtons: new Map(), storeNotes: new Map(),
  };

  // Which navigation entry a screen belongs to (wait, processing and error screens keep the current one).
  const areaOf = (s) => (s.startsWith('charge-') ? 'charge-amount' : s === 'history' ? s
    : ['wait', 'processing', 'error'].includes(s) ? state.area : 'shop');

  // Headings and explanations per problem kind live in the page (#error-texts).
  const KINDS = Object.fromEntries([...document.querySelectorAll('#error-texts [data-kind]')]
    .map((p) => [p.dataset.kind, [p.dataset.heading, p.textContent.replace(/\s+/g, ' ').trim()]]));
  const RETRYABLE = new Set(['card-missing', 'service-unavailable', 'internal', 'network']);

  // ---------- helpers ----------
  function amountText(minor) {
    const n = Math.trunc(Number(minor) || 0);
    const a = Math.abs(n);
    return (n < 0 ? '-' : '') + Math.floor(a / 100) + '.' + String(a % 100).padStart(2, '0');
  }
  const money = (minor) => amountText(minor) + (state.currency ? ' ' + state.currency : '');
  const text = (v) => (v === null || v === undefined ? '' : String(v));

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') node.textContent = text(v);
      else if (k === 'class') node.className = v;
      else if (k === 'dataset') Object.assign(node.dataset, v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  // A button with a stable id that automated checks can also find by data-testid.
  const button = (id, label, props) =>
    el('button', { type: 'button', id, 'data-testid': id, text: label, class: 'btn btn-small', ...props });

  function fill(values) { for (const [id, v] of Object.entries(values)) $(id).textContent = text(v); }
  function showNotice(id, msg) { $(id).textContent = msg; $(id).hidden = false; }
  function hideNotice(id) { $(id).hidden = true; $(id).textContent = ''; }

  // ---------- busy flag and API ----------
  function setBusy(delta) {
    state.inflight = Math.max(0, state.inflight + delta);
    const busy = state.inflight > 0 ? 'true' : 'false';
    document.body.dataset.busy = busy;
    $('main').setAttribute('aria-busy', busy);
    updateNav();
  }

  async function withBusy(fn) {
    setBusy(1);
    try { return await fn(); } finally { setBusy(-1); }
  }

  // Runs an operation with the busy flag set; a failure goes to the error screen (or to onError).
  const run = (fn, onError) => withBusy(async () => {
    try { await fn(); } catch (err) { await (typeof onError === 'function' ? onError(err) : fail(err, onError)); }
  });

  const apiError = (kind, title, detail, status) => Object.assign(new Error(detail || title || kind),
    { fromApi: true, kind, title: title || '', detail: detail || '', status: status || 0 });

  const kindForStatus = (st) => (st === 404 ? 'not-found' : st === 409 ? 'conflict'
    : st >= 502 && st <= 504 ? 'service-unavailable' : st < 500 ? 'bad-request' : 'internal');

  async function api(method, path, body, background) {
    if (!background) setBusy(1);
    try {
      const headers = body === undefined ? { Accept: 'application/json' }
        : { Accept: 'application/json', 'Content-Type': 'application/json' };
      const init = { method, cache: 'no-store', headers, body: body === undefined ? undefined : JSON.stringify(body) };
      let res;
      try { res = await fetch(path, init); } catch (e) {
        throw apiError('network', '', 'The wallet program on this computer did not answer.');
      }
      const raw = await res.text();
      let data = null;
      try { data = raw ? JSON.parse(raw) : null; } catch (e) { data = null; }
      const isObj = !!data && typeof data === 'object';
      if (!res.ok) {
        const kind = isObj && typeof data.kind === 'string' ? data.kind : kindForStatus(res.status);
        throw apiError(kind, isObj ? text(data.title) : '', isObj ? text(data.detail) : raw.slice(0, 300), res.status);
      }
      if (!isObj) throw apiError('internal', '', 'The wallet program sent an answer that could not be read.');
      return data;
    } finally {
      if (!background) setBusy(-1);
    }
  }

  // ---------- screens ----------
  function show(name, focus = true) {
    const target = $('screen-' + name);
    if (!target) return;
    if (name !== 'insert-card') stopPoll();
    if (name !== 'error') delete document.body.dataset.errorKind;
    for (const s of document.querySelectorAll('main > .screen')) s.hidden = s !== target;
    state.area = areaOf(name);
    state.screen = name;
    document.body.dataset.screen = name;
    const heading = target.querySelector('h2');
    document.title = (heading ? heading.textContent + ' — ' : '') + (state.storeName || 'Card wallet');
    updateNav();
    if (focus && heading) heading.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }

  function updateNav() {
    const area = state.area;
    const locked = state.inflight > 0;
    for (const b of document.querySelectorAll('[data-nav]')) {
      if (b.dataset.nav === area) b.setAttribute('aria-current', 'page'); else b.removeAttribute('aria-current');
      b.disabled = locked;
    }
    $('refresh').disabled = locked;
  }

  function fail(err, opts = {}) {
    const e = err && err.fromApi ? err : apiError('internal', '', text(err && err.message));
    if (e !== err) console.error(err);
    const [heading, explain] = KINDS[e.kind] || [e.title || 'Something went wrong', ''];
    const detail = e.detail || (e.title && e.title !== heading ? e.title : '');
    fill({ 'error-title': heading, 'error-explain': explain, 'error-detail': detail });
    $('error-detail').hidden = !detail;
    $('screen-error').dataset.kind = e.kind;
    state.errorBack = opts.back || 'shop';
    state.errorRetry = opts.retry && RETRYABLE.has(e.kind) ? opts.retry : null;
    $('error-retry').hidden = !state.errorRetry;
    $('error-topup').hidden = e.kind !== 'insufficient-balance';
    $('error-back').textContent = opts.backLabel || 'Go back';
    show('error');
    document.body.dataset.errorKind = e.kind;
    if (e.kind === 'card-missing' || e.kind === 'insufficient-balance') refreshStatus(true);
  }

  // ---------- header status ----------
  async function refreshStatus(background) {
    const box = $('card-status');
    try {
      const s = await api('GET', '/api/status', undefined, background);
      state.currency = text(s.currency);
      state.card = s.card && typeof s.card === 'object' ? s.card : { present: false };
      if (s.store && s.store.name) setStoreName(s.store.name);
      const c = state.card;
      box.dataset.present = c.present ? 'true' : 'false';
      const id = text(c.card_id);
      box.replaceChildren(...(c.present ? [
        el('span', { class: 'card-label', title: id, text: 'Card ' + (id.length > 4 ? '•••• ' + id.slice(-4) : id) }),
        el('span', { class: 'visually-hidden', text: ', balance ' }),
        el('span', { id: 'card-balance', class: 'card-balance amount', text: money(c.balance) }),
      ] : [el('span', { class: 'card-none', text: 'No card' })]));
    } catch (err) {
      state.card = null;
      box.dataset.present = 'unknown';
      box.textContent = err.kind === 'network' ? 'Wallet not reachable' : 'Card status unknown';
    }
    for (const n of document.querySelectorAll('.currency-label')) n.textContent = state.currency || 'amount';
    for (const b of document.querySelectorAll('[data-amount]')) b.textContent = money(Number(b.dataset.amount));
    renderCart();
    updateChargeNote();
    return state.card;
  }

  function setStoreName(name) { state.storeName = text(name); $('store-name').textContent = state.storeName; }

  // ---------- shop ----------
  async function loadCatalog() {
    try {
      const c = await api('GET', '/api/catalog');
      if (c.store_name) setStoreName(c.store_name);
      state.items = Array.isArray(c.items) ? c.items : [];
      renderCatalog();
      if (state.screen === 'error') show('shop');
    } catch (err) {
      renderCatalog();
      fail(err, { back: 'shop', retry: () => withBusy(loadCatalog) });
    }
  }

  const itemBySku = (sku) => state.items.find((i) => text(i.sku) === sku);

  function renderCatalog() {
    state.addButtons.clear();
    state.storeNotes.clear();
    const groups = new Map();
    for (const item of state.items) {
      const store = text(item.member_store);
      if (!groups.has(store)) groups.set(store, []);
      groups.get(store).push(item);
    }
    const sections = [...groups].map(([store, items], n) => {
      const note = el('p', { class: 'store-lock', hidden: true });
      state.storeNotes.set(store, note);
      const list = el('ul', { class: 'items' });
      for (const item of items) {
        const sku = text(item.sku);
        const add = button('add-' + sku, 'Add', {
          class: 'btn btn-small add', dataset: { sku }, 'aria-label': 'Add ' + text(item.title) + ' to order' });
        state.addButtons.set(sku, add);
        list.append(el('li', { class: 'item' }, el('span', { class: 'item-title', text: item.title }),
          el('span', { class: 'item-price amount', text: money(item.price) }), add));
      }
      return el('section', { class: 'store-group', 'aria-labelledby': 'store-h-' + n },
        el('h3', { id: 'store-h-' + n, text: store }), note, list);
    });
    $('catalog').replaceChildren(...sections);
    $('catalog-empty').hidden = state.items.length > 0;
    renderCart();
  }

  function addToCart(sku) {
    const item = itemBySku(sku);
    if (!item || (state.cartStore && state.cartStore !== text(item.member_store))) return;
    state.cartStore = text(item.member_store);
    state.cart.set(sku, Math.min(99, (state.cart.get(sku) || 0) + 1));
    hideNotice('shop-notice');
    renderCart();
  }

  function changeQty(sku, delta) {
    const q = (state.cart.get(sku) || 0) + delta;
    if (q > 0) state.cart.set(sku, Math.min(99, q)); else state.cart.delete(sku);
    if (state.cart.size === 0) state.cartStore = null;
    renderCart();
  }

  function clearCart() { state.cart.clear(); state.cartStore = null; renderCart(); }
  const cartLines = () => [...state.cart].map(([sku, quantity]) => ({ sku, quantity }));

  function renderCart() {
    const focusedId = document.activeElement && document.activeElement.id;
    let total = 0;
    const rows = [];
    for (const [sku, qty] of state.cart) {
      const item = itemBySku(sku);
      if (!item) continue;
      const title = text(item.title);
      const price = Number(item.price) || 0;
      total += price * qty;
      rows.push(el('li', { class: 'cart-line' },
        el('span', { class: 'item-title', text: title }),
        el('span', { class: 'qty', role: 'group', 'aria-label': 'Quantity of ' + title },
          button('dec-' + sku, '−', { class: 'btn btn-icon', dataset: { sku, delta: '-1' }, 'aria-label': 'One less ' + title }),
          el('output', { class: 'qty-value', 'aria-live': 'polite', text: qty }),
          button('inc-' + sku, '+', { class: 'btn btn-icon', dataset: { sku, delta: '1' }, 'aria-label': 'One more ' + title,
            disabled: qty >= 99 })),
        el('span', { class: 'amount line-total', text: money(price * qty) }),
        button('remove-' + sku, 'Remove', { class: 'btn btn-small btn-quiet', dataset: { sku, delta: '-999' },
          'aria-label': 'Remove ' + title })));
    }
    $('cart-lines').replaceChildren(...rows);
    const empty = state.cart.size === 0;
    for (const id of ['cart-total-row', 'clear-cart', 'cart-store']) $(id).hidden = empty;
    $('cart-empty').hidden = !empty;
    $('to-estimate').disabled = empty;
    $('cart-total').textContent = money(total);
    $('cart-store').textContent = empty ? '' : 'From ' + state.cartStore;
    for (const [sku, btn] of state.addButtons) {
      const q = state.cart.get(sku) || 0;
      btn.disabled = !!state.cartStore && state.cartStore !== text(itemBySku(sku).member_store);
      btn.textContent = q ? 'Add (' + q + ')' : 'Add';
    }
    for (const [store, note] of state.storeNotes) {
      const locked = !!state.cartStore && state.cartStore !== store;
      note.hidden = !locked;
      note.textContent = locked ? 'One order holds items of one store only. Finish or clear your order from '
        + state.cartStore + ' to buy here.' : '';
    }
    // Keep keyboard focus on the control that was used, even though the list was rebuilt.
    if (focusedId && document.activeElement === document.body) {
      const again = $(focusedId) || state.addButtons.get(focusedId.replace(/^(inc|dec|remove)-/, '')) || $('h-cart');
      if (again && !again.disabled) again.focus(); else $('h-cart').focus();
    }
  }

  const th = (t, cls) => el('th', { scope: 'col', class: cls, text: t });

  function linesTable(lines, total, caption) {
    const body = el('tbody');
    for (const l of Array.isArray(lines) ? lines : []) {
      body.append(el('tr', null,
        el('td', { class: 'item-cell' }, el('span', { text: l.title }),
          el('span', { class: 'sub col-narrow', text: money(l.unit_price) + ' each' })),
        el('td', { class: 'num', text: l.quantity }),
        el('td', { class: 'num col-wide', text: money(l.unit_price) }),
        el('td', { class: 'num', text: money(l.line_total) })));
    }
    return el('table', { class: 'lines' }, el('caption', { class: 'visually-hidden', text: caption }),
      el('thead', null, el('tr', null, th('Item'), th('Qty', 'num'), th('Price', 'num col-wide'), th('Total', 'num'))),
      body,
      el('tfoot', null, el('tr', null, el('th', { scope: 'row', colspan: '2', text: 'Total' }),
        el('td', { class: 'col-wide' }), el('td', { class: 'num total', text: money(total) }))));
  }

  function toEstimate() {
    if (!state.cart.size) return;
    return run(async () => {
      const e = await api('POST', '/api/estimate', { lines: cartLines() });
      $('estimate-store').textContent = text(e.member_store);
      $('estimate-lines').replaceChildren(linesTable(e.lines, e.total, 'Estimate'));
      show('estimate');
    }, { back: 'shop', retry: toEstimate });
  }

  function requestBill() {
    if (!$('choose-card').checked) return $('choose-card').focus();
    return run(async () => {
      const b = await api('POST', '/api/bill', { lines: cartLines() });
      state.bill = b;
      fill({ 'bill-order': b.order_number, 'bill-store': b.member_store, 'bill-expires': b.expires,
        'pay-with-card': 'Pay ' + money(b.total) + ' with card' });
      $('bill-lines').replaceChildren(linesTable(b.lines, b.total, 'Bill'));
      show('bill');
    }, { back: 'method', retry: requestBill });
  }

  // ---------- payment ----------
  async function startPayment() {
    if (!state.bill) return show('shop');
    const card = await withBusy(() => refreshStatus());
    if (card && card.present) return prepare();
    $('insert-status').textContent = 'Waiting for your card…';
    show('insert-card');
    state.pollTimer = window.setInterval(async () => {
      if (state.screen !== 'insert-card' || state.inflight > 0) return;
      const c = await refreshStatus(true);
      if (state.screen === 'insert-card' && c && c.present) {
        $('insert-status').textContent = 'Card found.';
        prepare();
      }
    }, 1500);
  }

  function stopPoll() { window.clearInterval(state.pollTimer); state.pollTimer = 0; }

  function prepare() {
    stopPoll();
    if (!state.bill) return show('shop');
    $('wait-message').textContent = 'Reading your card…';
    show('wait');
    return run(async () => {
      const p = await api('POST', '/api/pay/prepare', { order_number: state.bill.order_number });
      state.settlement = p;
      fill({ 'confirm-store': state.bill.member_store, 'confirm-order': p.order_number,
        'confirm-balance': money(p.balance), 'confirm-spendable': money(p.spendable),
        'confirm-total': money(p.total), 'confirm-after': money(p.balance_after), 'confirm-pay': 'Pay ' + money(p.total) });
      $('confirm-spendable-row').hidden = Number(p.spendable) === Number(p.balance);
      $('confirm-lines').replaceChildren(linesTable(state.bill.lines, state.bill.total, 'Bill'));
      $('confirm-pay').disabled = false;
      show('confirm');
      await refreshStatus();
    }, { back: 'bill', retry: prepare });
  }

  function confirmPay() {
    if (!state.settlement) return;
    $('confirm-pay').disabled = true;
    fill({ 'h-processing': 'Processing payment', 'processing-message': 'Your payment is being processed…' });
    show('processing');
    return run(async () => {
      const r = await api('POST', '/api/pay/confirm', { settlement_id: state.settlement.settlement_id });
      state.settlement = null;
      const rc = r.receipt && typeof r.receipt === 'object' ? r.receipt : {};
      // The receipt names its signer by device id; the person bought from the bill's member store.
      fill({ 'receipt-store': (state.bill && state.bill.member_store) || rc.store,
        'receipt-order': rc.order_number ?? r.order_number, 'receipt-date': rc.date,
        'receipt-amount': money(rc.amount ?? r.amount), 'receipt-balance': money(r.balance_after) });
      const url = text(r.download_url); // only ever a same-origin path
      $('download').href = url.startsWith('/') && !url.startsWith('//')
        ? url : '/api/download/' + encodeURIComponent(text(r.order_number));
      clearCart();
      state.bill = null;
      show('complete');
      await refreshStatus();
    }, async (err) => {
      $('confirm-pay').disabled = false;
      const again = RETRYABLE.has(err.kind);
      if (!again) state.settlement = null;
      fail(err, { back: again ? 'confirm' : 'bill', retry: confirmPay });
      await refreshStatus(true);
    });
  }

  function cancelPay() {
    const s = state.settlement;
    if (!s) return show('shop');
    return withBusy(async () => {
      try {
        await api('POST', '/api/pay/cancel', { settlement_id: s.settlement_id });
      } catch (err) {
        if (err.kind !== 'not-found') return fail(err, { back: 'confirm', retry: cancelPay });
      }
      state.settlement = null;
      showNotice('shop-notice', 'Payment cancelled. Nothing was taken from your card.');
      show('shop');
      await refreshStatus();
    });
  }

  // Leaving the confirmation screen by other means also releases the prepared payment.
  function leavePaymentQuietly() {
    const s = state.settlement;
    if (!s || state.screen === 'processing') return;
    state.settlement = null;
    fetch('/api/pay/cancel', { method: 'POST', keepalive: true, headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ settlement_id: s.settlement_id }) }).catch(() => {});
  }

  // ---------- top-up ----------
  function updateChargeNote() {
    const c = state.card;
    $('charge-balance-note').textContent = !c ? ''
      : c.present ? 'Your card holds ' + money(c.balance) + '.'
        : 'No card in the reader. Put your card in the reader before you top up.';
  }

  function parseAmount(raw) {
    const s = text(raw).replace(/\s+/g, '').replace(',', '.');
    if (!s) return { error: 'Enter the amount to add.' };
    const m = /^(\d+)(?:\.(\d{1,2}))?$/.exec(s);
    if (!m) return { error: 'Enter the amount as a number, for example 20 or 20.00.' };
    const minor = Number(m[1]) * 100 + Number((m[2] || '0').padEnd(2, '0'));
    if (!Number.isSafeInteger(minor) || minor > 99999999) return { error: 'That amount is too large.' };
    if (minor <= 0) return { error: 'The amount must be more than zero.' };
    return { minor };
  }

  function setFieldError(id, msg) {
    fill({ [id + '-error']: msg });
    $(id + '-error').hidden = !msg;
    if (msg) $(id).setAttribute('aria-invalid', 'true'); else $(id).removeAttribute('aria-invalid');
    return !msg;
  }

  function chargeAmountNext() {
    const r = parseAmount($('charge-amount').value);
    if (!setFieldError('charge-amount', r.error)) return $('charge-amount').focus();
    state.chargeAmount = r.minor;
    hideNotice('charge-notice');
    $('charge-card-amount').textContent = money(r.minor);
    show('charge-card');
  }

  function checkExpiry(exp) {
    const m = /^(\d{1,2})\s*([/-]?)\s*(\d{2}|\d{4})$/.exec(exp);
    if (!exp) return { error: 'Enter the expiry date as MM/YY.' };
    if (!m || (m[1].length === 1 && !m[2])) return { error: 'Write the expiry date as MM/YY, for example 08/29.' };
    const month = Number(m[1]);
    const year = m[3].length === 4 ? Number(m[3]) : 2000 + Number(m[3]);
    const now = new Date();
    if (month < 1 || month > 12) return { error: 'The month must be between 01 and 12.' };
    if (year < now.getFullYear() || (year === now.getFullYear() && month < now.getMonth() + 1)) {
      return { error: 'This card has expired.' };
    }
    return { value: String(month).padStart(2, '0') + '/' + String(year % 100).padStart(2, '0') };
  }

  function checkCardForm() {
    const digits = $('card-number').value.replace(/[\s-]+/g, '');
    const numErr = !digits ? 'Enter the card number.'
      : !/^\d+$/.test(digits) ? 'The card number may contain only digits and spaces.'
        : digits.length < 12 || digits.length > 19 ? 'A card number has 12 to 19 digits.' : '';
    const exp = checkExpiry($('card-expiry').value.trim());
    const name = $('card-name').value.trim().replace(/\s+/g, ' ');
    const nameErr = name ? '' : 'Enter the name as it is printed on the card.';
    setFieldError('card-number', numErr);
    setFieldError('card-expiry', exp.error);
    setFieldError('card-name', nameErr);
    const first = numErr ? 'card-number' : exp.error ? 'card-expiry' : nameErr ? 'card-name' : '';
    if (first) { $(first).focus(); return null; }
    return { card_number: digits, expiry: exp.value, holder_name: name };
  }

  function authorize() {
    const card = checkCardForm();
    if (!card) return;
    if (!state.chargeAmount) return show('charge-amount');
    $('wait-message').textContent = 'Asking your credit card company…';
    show('wait');
    return run(async () => {
      const a = await api('POST', '/api/charge/authorize', { amount: state.chargeAmount, ...card });
      state.charge = a;
      $('card-number').value = '';
      fill({ 'auth-code': a.authorization, 'auth-amount': money(a.amount), 'auth-balance': money(a.balance),
        'auth-after': money(a.balance_after), 'confirm-charge': 'Write ' + money(a.amount) + ' to card' });
      $('confirm-charge').disabled = false;
      show('charge-authorized');
    }, (err) => fail(err, { back: 'charge-card', retry: authorize,
      backLabel: err.kind === 'declined' ? 'Use another card' : 'Go back' }));
  }

  function confirmCharge() {
    if (!state.charge) return;
    $('confirm-charge').disabled = true;
    fill({ 'h-processing': 'Updating your card', 'processing-message': 'Adding the money to your card…' });
    show('processing');
    return run(async () => {
      const r = await api('POST', '/api/charge/confirm', { charge_id: state.charge.charge_id });
      state.charge = null;
      state.chargeAmount = 0;
      $('charge-amount').value = '';
      fill({ 'charge-done-amount': money(r.amount), 'charge-done-balance': 'Your card now holds ' + money(r.balance_after) });
      show('charge-done');
      await refreshStatus();
    }, async (err) => {
      $('confirm-charge').disabled = false;
      const again = RETRYABLE.has(err.kind);
      if (!again) state.charge = null;
      fail(err, { back: again ? 'charge-authorized' : 'charge-amount', retry: confirmCharge });
      await refreshStatus(true);
    });
  }

  function openCharge() {
    updateChargeNote();
    if (state.chargeAmount && !$('charge-amount').value) $('charge-amount').value = amountText(state.chargeAmount);
    show('charge-amount');
  }

  // ---------- history ----------
  function loadHistory() {
    show('history');
    return run(async () => {
      const r = await api('GET', '/api/log').finally(() => refreshStatus());
      renderHistory(Array.isArray(r.entries) ? r.entries : []);
      if (state.screen === 'error') show('history');
    }, { back: 'shop', retry: loadHistory, backLabel: 'Back to shop' });
  }

  function renderHistory(entries) {
    const list = entries.slice();
    if (list.length > 1 && text(list[0].date) < text(list[list.length - 1].date)) list.reverse(); // newest first
    $('history-empty').hidden = list.length > 0;
    if (!list.length) return $('history-list').replaceChildren();
    const body = el('tbody');
    for (const e of list) {
      const isCharge = e.kind === 'charge';
      const what = isCharge ? 'Top-up' : 'Payment';
      const party = text(e.party);
      body.append(el('tr', { class: isCharge ? 'in' : 'out', dataset: { kind: text(e.kind) } },
        el('td', { class: 'col-wide', text: e.date }),
        el('td', { class: 'item-cell' }, el('span', { text: party ? what + (isCharge ? ' via ' : ' to ') + party : what }),
          el('span', { class: 'sub col-narrow', text: e.date })),
        el('td', { class: 'num' }, el('span', { text: (isCharge ? '+' : '−') + money(Math.abs(Number(e.amount) || 0)) }),
          el('span', { class: 'sub col-narrow', text: 'Balance ' + money(e.balance_after) })),
        el('td', { class: 'num col-wide', text: money(e.balance_after) })));
    }
    $('history-list').replaceChildren(el('table', { class: 'lines history' },
      el('caption', { class: 'visually-hidden', text: 'Payments and top-ups, newest first' }),
      el('thead', null, el('tr', null, th('Date', 'col-wide'), th('What'), th('Amount', 'num'), th('Balance', 'num col-wide'))),
      body));
  }

  // ---------- navigation and wiring ----------
  function navigate(target) {
    leavePaymentQuietly();
    if (target === 'shop') {
      show('shop');
      if (!state.items.length) withBusy(loadCatalog);
    } else if (target === 'charge-amount') {
      hideNotice('charge-notice');
      openCharge();
      withBusy(() => refreshStatus());
    } else if (target === 'history') {
      loadHistory();
    }
  }

  function bind() {
    const clicks = {
      refresh: () => withBusy(async () => {
        await refreshStatus();
        if (state.screen === 'shop' && !state.items.length) await loadCatalog();
      }),
      'catalog-reload': () => withBusy(loadCatalog), 'clear-cart': () => { clearCart(); $('h-cart').focus(); },
      'to-estimate': toEstimate, 'estimate-back': () => show('shop'), 'to-method': () => show('method'),
      'method-back': () => show('estimate'), 'bill-back': () => show('shop'), 'pay-with-card': startPayment,
      'card-inserted': prepare, 'insert-cancel': () => show('bill'), 'confirm-pay': confirmPay, 'cancel-pay': cancelPay,
      'complete-shop': () => show('shop'), 'charge-card-back': openCharge, 'confirm-charge': confirmCharge,
      'cancel-charge': () => {
        state.charge = null;
        showNotice('charge-notice', 'Top-up cancelled. Nothing was written to your card.');
        openCharge();
      },
      'charge-done-shop': () => navigate('shop'), 'charge-done-history': () => navigate('history'),
      'history-refresh': loadHistory, 'error-back': () => show(state.errorBack),
      'error-retry': () => state.errorRetry && state.errorRetry(), 'error-topup': () => navigate('charge-amount'),
    };
    for (const [id, fn] of Object.entries(clicks)) $(id).addEventListener('click', fn);
    for (const b of document.querySelectorAll('[data-nav]')) b.addEventListener('click', () => navigate(b.dataset.nav));
    $('catalog').addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-sku]');
      if (b && !b.disabled) addToCart(b.dataset.sku);
    });
    $('cart-lines').addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-sku]');
      if (b && !b.disabled) changeQty(b.dataset.sku, Number(b.dataset.delta));
    });
    for (const b of document.querySelectorAll('[data-amount]')) b.addEventListener('click', () => {
      $('charge-amount').value = amountText(Number(b.dataset.amount));
      setFieldError('charge-amount', '');
      $('charge-amount').focus();
    });
    const submit = (id, fn) => $(id).addEventListener('submit', (ev) => { ev.preventDefault(); fn(); });
    submit('method-form', requestBill);
    submit('charge-amount-form', chargeAmountNext);
    submit('charge-card-form', authorize);
    $('h-cart').tabIndex = -1;
    window.addEventListener('pagehide', leavePaymentQuietly);
  }

  async function init() {
    bind();
    show('shop', false);
    await withBusy(async () => { await refreshStatus(); await loadCatalog(); });
  }

  init().catch((err) => console.error(err));
})();
