"""The pieces of attnbench's HTML pages (the sweep report, the history page): the style, the
script that sorts and filters tables, and a table. No plotting library: the history's page is
drawn without one."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd


def fmt(value: object) -> str:
    """A table cell as text: empty for missing (never None or nan), numbers to 4 digits."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    text = str(value)
    return "" if text in ("nan", "None", "NaN", "<NA>") else text


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1400px;margin:auto;padding:0 1.5em;color:#222}
h1{border-bottom:3px solid #4c72b0;padding-bottom:.3em}h2{margin-top:2em;color:#2a4a80}
nav{background:#f4f6fa;padding:.6em 1.2em;border-radius:6px}nav li{margin:.15em 0}
table{border-collapse:collapse;font-size:12px;margin:.6em 0}td,th{border:1px solid #ccd;
padding:3px 7px;text-align:right}th{background:#eef1f7;cursor:pointer;position:sticky;top:0}
td:first-child,th:first-child{text-align:left}tr:nth-child(even){background:#fafbfd}
img{max-width:100%;border:1px solid #eee}.bullets li{margin:.25em 0}
input.filter{margin:.4em 0;padding:4px 8px;width:22em}
"""

SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(table){
  var body=table.tBodies[0];
  table.querySelectorAll('th').forEach(function(th,col){
    th.addEventListener('click',function(){
      var asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
      var rows=Array.from(body.rows);
      rows.sort(function(a,b){
        var x=a.cells[col].textContent.replace(/,/g,''),y=b.cells[col].textContent.replace(/,/g,'');
        var nx=parseFloat(x),ny=parseFloat(y);
        var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return asc?c:-c;});
      rows.forEach(function(r){body.appendChild(r);});});});
  var input=document.getElementById(table.id+'-filter');
  if(input){input.addEventListener('input',function(){var q=input.value.toLowerCase();
    Array.from(body.rows).forEach(function(r){
      r.style.display=r.textContent.toLowerCase().indexOf(q)>=0?'':'none';});});}
});
"""


def html_table(table: pd.DataFrame, table_id: str) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>"
        for row in table.itertuples(False)
    )
    ident = table_id or f"t{abs(hash(tuple(table.columns))) % 10**8}"
    search = (
        f'<input class="filter" id="{ident}-filter" placeholder="filter rows...">'
        if table_id
        else ""
    )
    return (
        f'{search}<table class="sortable" id="{ident}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )
