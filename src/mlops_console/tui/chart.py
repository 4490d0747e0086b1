"""The chart under the detail text: a plotext plot of an area's Chart, hidden without one."""

from __future__ import annotations

from textual.containers import Vertical

from mlops_console.tui.areas import Chart


class ChartPane(Vertical):
    def draw(self, chart: Chart | None) -> None:
        """Plot the chart's series (a line each), or hide the pane when there is none."""
        if not chart:
            self.remove_class("visible")
            return
        from textual_plotext import PlotextPlot  # imported on first use: the start stays fast

        plots = self.query(PlotextPlot)
        plot = plots.first() if plots else None
        if plot is None:
            plot = PlotextPlot()
            self.mount(plot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        for label, (xs, ys) in chart["series"].items():
            plt.plot(xs, ys, label=label, marker="braille")
        plt.title(chart["title"])
        plt.ylabel(chart.get("ylabel", ""))
        self.add_class("visible")
        plot.refresh()

    def hide(self) -> None:
        self.remove_class("visible")
